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

A connection that dies within that second (or while in use: a terminated backend, a
restarted server) fails the statement; SQLAlchemy then invalidates the whole pool, so
the next checkout opens a new connection. In the web, ``RetryReads`` answers an
idempotent request (GET, HEAD, OPTIONS) that met such a connection once more, on the
new one, instead of a 500. Anything else is not repeated: a write may have committed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import has_request_context, request
from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import Pool

log = logging.getLogger(__name__)

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


# -- an idempotent request that met a dead connection is answered once more (web) -----

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
_DEAD = "apg.db_connection_died"  # set in the WSGI environ of the request that met one


@event.listens_for(Engine, "handle_error")
def _note_dead_connection(context: ExceptionContext) -> None:
    if context.is_disconnect and has_request_context():
        request.environ[_DEAD] = True


class RetryReads:
    """WSGI middleware: an idempotent request that failed (a 5xx, or an exception that
    got out) because its database connection was dead is handled once more from its
    original environ; the pool was invalidated meanwhile, so the retry connects anew."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in IDEMPOTENT:
            return self.wsgi_app(environ, start_response)
        pristine = dict(environ)
        answer: list[Any] = []

        def hold(status: str, headers: list[Any], exc_info: Any = None) -> Callable[..., Any]:
            answer[:] = [status, headers, exc_info]
            return lambda data: None  # Flask never writes through start_response's callable

        try:
            body = self.wsgi_app(environ, hold)
        except Exception:
            if not environ.get(_DEAD):
                raise
        else:
            if not (environ.get(_DEAD) and answer and answer[0][:1] == "5"):
                start_response(*answer)
                return body
            if hasattr(body, "close"):
                body.close()
        log.warning("%s %s met a dead database connection: answering it once more",
                    environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
        return self.wsgi_app(pristine, start_response)
