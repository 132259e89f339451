"""Whether a scheduler pass has trigger work, and when it will: one statement, and
nothing of the triggers' code (their models, croniter, the services, the runs service)
loaded when the answer is "not now": a scheduler's memory is counted
(docs/performance.md), and most passes of most installations find nothing due."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, column, text

from app.extensions import DbSession
from app.times import UtcDateTime

# The tables of capability.triggers.models and capability.models, named here rather
# than imported (see above); tests/integration/test_schedules.py runs it.
_WORK = text(
    "SELECT (SELECT min(next_due) FROM apg_schedule) AS first,"
    " (EXISTS (SELECT 1 FROM apg_run_event)"
    " OR EXISTS (SELECT 1 FROM apg_backfill WHERE status = 'running')) AS other"
).columns(column("first", UtcDateTime()), column("other", Boolean()))  # as stored


def soonest(session: DbSession, now: dt.datetime) -> dt.datetime | None:
    """When trigger work is due: ``now`` or earlier when some is due already (a tick,
    an ended run to hand to its triggers, a running backfill), else the earliest next
    tick, or None when no schedule will ever fire."""
    first, other = session.execute(_WORK).one()
    session.rollback()
    if other:
        return now
    if first is None:
        return None
    return first  # type: ignore[no-any-return]


def pending(session: DbSession, now: dt.datetime) -> bool:
    at = soonest(session, now)
    return at is not None and at <= now
