"""When a pooled database connection is tested before it is handed out.

SQLAlchemy's ``pool_pre_ping`` sends ``SELECT 1`` at every checkout: a round trip per
transaction, which on a worker is one statement in six of a task's hop. Here a
connection returned to the pool less than ``IDLE_PING_SECONDS`` ago (it worked then)
is handed out as is; one that sat idle longer (the server may have restarted, a proxy
may have dropped it) is tested first and, when the test fails, replaced, as with
pre-ping. A server that goes away within that second fails the next statement as it
would have without any ping, and the pool replaces the connection after that error.

The listeners are on SQLAlchemy's ``Pool`` class: every engine of the process gets
them (importing this module is enough); ``pool_pre_ping`` is left off.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import Pool

IDLE_PING_SECONDS = 1.0
_SINCE = "apg_idle_since"


@event.listens_for(Pool, "connect")
def _connected(_dbapi_connection: Any, record: Any) -> None:
    record.info[_SINCE] = time.monotonic()  # just opened: nothing to test


@event.listens_for(Pool, "checkin")
def _returned(_dbapi_connection: Any, record: Any) -> None:
    record.info[_SINCE] = time.monotonic()


@event.listens_for(Pool, "checkout")
def _test_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    since = record.info.get(_SINCE)
    if since is not None and time.monotonic() - since < IDLE_PING_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            with contextlib.suppress(Exception):
                cursor.close()
    except Exception as exc:  # whatever the driver raises for a dead connection
        # The pool discards this connection and checks out another (a new one).
        raise DisconnectionError(f"pooled connection failed its test: {exc}") from exc
