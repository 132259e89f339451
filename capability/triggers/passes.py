"""One scheduler pass over every kind of trigger work (the ``tick`` runtime hook): due
schedule ticks (``ticker``), runs that ended for run-finished triggers (``events``),
and the next runs of backfills (``backfills``). One failing never stops the others."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.extensions import DbSession
from capability.engine.dispatch import Dispatcher
from capability.triggers import backfills, events, ticker

log = logging.getLogger("capability.triggers")


@dataclass
class Report:
    ticks: ticker.PassReport = field(default_factory=ticker.PassReport)
    events: int = 0  # ended runs handed to their triggers
    backfills: int = 0  # backfill runs started


def run_all(session: DbSession, dispatcher: Dispatcher, now: dt.datetime,
            catchup_max: int = 100, max_depth: int = 10) -> Report:
    report = Report()
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("ticks", lambda: ticker.run_pass(session, dispatcher, now, catchup_max)),
        ("events", lambda: events.process(session, dispatcher, max_depth)),
        ("backfills", lambda: backfills.advance(session, dispatcher)),
    ]
    for what, step in steps:
        try:
            setattr(report, what, step())
        except Exception:
            log.exception("triggers: a pass over %s failed", what)
            session.rollback()
    return report


def warm() -> None:
    """Load what a pass uses ahead of due work (its modules are imported lazily, so
    that a scheduler with nothing due stays small): the first tick of a busy second is
    not kept waiting by imports."""
    import croniter  # noqa: F401

    from capability.runs import service, starts  # noqa: F401
