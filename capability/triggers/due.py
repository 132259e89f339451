"""Whether a scheduler pass has trigger work at all: one statement, and nothing of the
triggers' code (their models, croniter, the services, the runs service) loaded when the
answer is no: a scheduler's memory is counted (docs/performance.md), and most passes
of most installations find nothing due."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import bindparam, text

from app.extensions import DbSession
from app.times import UtcDateTime

# The tables of capability.triggers.models and capability.models, named here rather
# than imported (see above); tests/integration/test_schedules.py runs it.
_PENDING = text(
    "SELECT (EXISTS (SELECT 1 FROM apg_schedule WHERE next_due <= :now)"
    " OR EXISTS (SELECT 1 FROM apg_run_event)"
    " OR EXISTS (SELECT 1 FROM apg_backfill WHERE status = 'running'))"
).bindparams(bindparam("now", type_=UtcDateTime()))  # stored as the columns store it


def pending(session: DbSession, now: dt.datetime) -> bool:
    found = session.execute(_PENDING, {"now": now}).scalar()
    session.rollback()
    return bool(found)
