"""The unit of work of the engine: what a transaction must do once it has committed.

Whoever owns a transaction (an RQ entry point in ``jobs``, the reaper, a service)
``begin``\\s it with its dispatcher and ends it with ``commit`` or ``rollback``; engine
functions in between never commit, they add to the transaction's ``Outbox``:

* ``send``: an attempt to enqueue (a ready task, a retry after its backoff, the end of
  a ``delay``, a sub-workflow's "I am done" to its parent);
* ``stop``: an attempt a worker is running that must stop (cancel);
* ``touch``: a run whose watchers must hear about the change;
* ``log``: a line for operators (a run started, a run finished: logger
  ``capability.runs``), so the log never tells of work that was rolled back.

``commit`` commits, then delivers: nothing reaches Redis for work that was rolled back,
and nothing committed is forgotten (an enqueue that fails after the commit is found
by the reaper, which re-sends what the database says is queued). The outbox lives in
``session.info``, so engine functions reach it through the session they are given; it
also carries the engine's settings (``EngineSettings``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from app.extensions import DbSession
from capability.engine.dispatch import Dispatcher, Send
from capability.engine.settings import EngineSettings
from capability.engine.writes import Writes

KEY = "apg_outbox"
RUN_LOG = logging.getLogger("capability.runs")
LOG = logging.getLogger(__name__)


@dataclass
class Outbox:
    dispatcher: Dispatcher
    sends: list[Send] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)
    runs: dict[str, None] = field(default_factory=dict)  # ordered, without repeats
    lines: list[tuple[int, str]] = field(default_factory=list)
    # Runs this transaction locked exclusively, by id: a begin in the same transaction
    # reads them from here (``runner.begin_made``), not again from the database.
    held: dict[str, Any] = field(default_factory=dict)
    # Row writes held back until the commit (``engine.writes``); None: writes go at once.
    writes: Writes | None = None

    @property
    def settings(self) -> EngineSettings:
        return self.dispatcher.settings

    def send(self, item: Send) -> None:
        self.sends.append(item)

    def stop(self, attempt_id: str) -> None:
        self.stops.append(attempt_id)

    def touch(self, run_id: str) -> None:
        self.runs[run_id] = None

    def log(self, level: int, line: str) -> None:
        self.lines.append((level, line))

    def deliver(self, keep: Send | None = None, tolerant: bool = False) -> None:
        """Stop, enqueue and publish what the committed transaction gathered; ``keep``:
        a send the caller goes on with itself (``jobs.run_attempt``). ``tolerant``: a
        Redis that cannot be reached is logged, not raised (a request answering for a
        committed change): whatever was not sent is queued in the database, and the
        reaper sends it once Redis answers."""
        sends = [s for s in self.sends if s is not keep] if keep is not None else self.sends
        runs = list(self.runs)
        steps: list[tuple[str, int, Callable[[], None]]] = [
            ("stop", len(self.stops), lambda: self.dispatcher.stop(self.stops)),
            ("send", len(sends), lambda: self.dispatcher.send(sends)),
            ("publish", len(runs), lambda: self.dispatcher.publish(runs)),
        ]
        for what, count, step in steps:
            if not count:
                continue
            try:
                step()
            except (RedisError, OSError) as exc:
                if not tolerant:
                    raise
                LOG.warning("committed, but Redis is unreachable (%s): could not %s %d "
                            "item(s); the reaper sends what is queued once it answers",
                            exc, what, count)
        for level, line in self.lines:
            RUN_LOG.log(level, "%s", line)


def begin(session: DbSession, dispatcher: Dispatcher) -> Outbox:
    """Start a unit of work on ``session`` (a new one replaces whatever was left)."""
    box = session.info[KEY] = Outbox(dispatcher)
    return box


def of(session: DbSession) -> Outbox:
    """The outbox of the transaction ``session`` is in."""
    box = session.info.get(KEY)
    if box is None:
        raise RuntimeError("no unit of work: the transaction's owner calls outbox.begin "
                           "(capability.engine.outbox) before engine functions")
    return box  # type: ignore[no-any-return]


def flush(session: DbSession) -> None:
    """Write what the transaction has not written yet (its ORM changes, its held
    writes): before any statement that reads what it may have changed."""
    if session.new or session.dirty or session.deleted:
        session.flush()
    box = session.info.get(KEY)
    if box is not None and box.writes is not None:
        box.writes.flush(session.connection())


def commit(session: DbSession, deliver: bool = True) -> Outbox:
    """Commit the transaction, then deliver its outbox (``deliver=False``: the caller
    delivers, after it took out what it keeps). A failed commit delivers nothing."""
    box = of(session)
    if box.writes is not None:
        box.writes.flush(session.connection())
    del session.info[KEY]
    session.commit()
    if deliver:
        box.deliver()
    return box


def rollback(session: DbSession) -> None:
    """Roll the transaction back; what it gathered is dropped."""
    session.info.pop(KEY, None)
    session.rollback()
