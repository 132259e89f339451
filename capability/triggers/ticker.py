"""The scheduler's pass over due schedules: every tick decided exactly once.

Any number of scheduler processes, on any number of machines, run ``run_pass`` about
once a second. The argument for exactly once:

1. A tick is *decided* by inserting its ledger row (``ScheduleTick``, primary key
   schedule + instant) in the transaction that also creates its run (or records why
   none). The database lets one such row exist: a second inserter of the same tick gets
   nothing (``ON CONFLICT DO NOTHING``, which waits for the first transaction to end)
   and creates no run. Two schedulers may compute the same tick; only one commits it.
2. A scheduler that dies mid-decision has committed nothing: its transaction is rolled
   back by the database, the tick stays undecided, and the next pass of any scheduler
   decides it. Nothing is held in a process or in Redis that a crash could lose.
3. Runs are enqueued only after that commit (``engine.outbox``); an enqueue that fails
   after it is re-sent by the reaper from what the database says is queued.

On PostgreSQL a scheduler also takes the schedule's row ``FOR UPDATE SKIP LOCKED``:
that only spares the others the work (they move on to other schedules); correctness
does not depend on it, and the lock dies with its transaction.

"Now" comes from ``triggers.clock`` so that tests drive DST days, downtime and long
runs of ticks without waiting.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm.attributes import set_committed_value

from app.extensions import DbSession
from app.ids import new_id
from capability import dsl
from capability.engine import outbox
from capability.engine.dispatch import Dispatcher
from capability.models import Run, Workflow
from capability.triggers import cron
from capability.triggers.models import Schedule, ScheduleTick

log = logging.getLogger("capability.triggers")

# A tick decided more than this after it fell due was missed (the scheduler was not
# running): the schedule's catch-up policy decides it. Within it, it is on time.
GRACE = dt.timedelta(seconds=60)
# A buffered run waits for the active one to end: the schedule is looked at this often.
BUFFER_POLL = dt.timedelta(seconds=2)
BATCH = 200  # due schedules read per query
CHUNK = 100  # schedules decided per transaction


@dataclass
class PassReport:
    schedules: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


@dataclass(frozen=True)
class Decision:
    at: dt.datetime
    outcome: str  # fire (becomes fired or another outcome), skipped_catchup, skipped_dst
    reason: str | None = None


def jitter_of(schedule: Schedule, at: dt.datetime) -> dt.timedelta:
    """The tick's delay within [0, jitter): the same on every scheduler (a hash, not a
    random draw), so they all agree on when it falls due."""
    span = int(cron.duration(schedule.jitter, "jitter").total_seconds())
    if span <= 0:
        return dt.timedelta(0)
    digest = hashlib.sha256(f"{schedule.id}|{at.isoformat()}".encode()).digest()
    return dt.timedelta(seconds=int.from_bytes(digest[:8], "big") % span)


def _ticks(schedule: Schedule, after: dt.datetime) -> Any:
    for tick in cron.ticks(schedule.cron, schedule.timezone, after, schedule.dst_missing,
                           schedule.dst_repeated):
        if schedule.start_at is not None and tick.at < schedule.start_at:
            continue
        if schedule.end_at is not None and tick.at > schedule.end_at:
            return
        yield tick


def next_due(schedule: Schedule, now: dt.datetime) -> dt.datetime | None:
    """When a scheduler should look at the schedule again (None: never)."""
    if not schedule.enabled or schedule.paused or schedule.disabled_reason:
        return None
    if schedule.buffered_for is not None:
        return now + BUFFER_POLL
    for tick in _ticks(schedule, schedule.decided_until):
        return tick.at + jitter_of(schedule, tick.at)
    return None


def plan(schedule: Schedule, now: dt.datetime, catchup_max: int) -> tuple[list[Decision],
                                                                          dt.datetime]:
    """The ticks to decide now, oldest first, and the instant decided up to.

    Only ticks within ``catchup_window`` of now count, at most ``catchup_max`` (the newest);
    older ones are dropped without a ledger row. An on-time tick fires. A missed one
    (more than ``GRACE`` late: no scheduler ran) follows ``catchup``: ``none`` skips it,
    ``all`` fires it, ``latest`` fires it only when it is the newest tick of all."""
    window = cron.duration(schedule.catchup_window, "catchup_window")
    until = max(schedule.decided_until, now - window)
    due: list[cron.Tick] = []
    for tick in _ticks(schedule, until):
        if tick.at + jitter_of(schedule, tick.at) > now:
            break
        due.append(tick)
    if due:
        until = due[-1].at
    due = due[-catchup_max:]
    newest = next((t.at for t in reversed(due) if t.kind == "fire"), None)
    out: list[Decision] = []
    for tick in due:
        missed = now - (tick.at + jitter_of(schedule, tick.at)) > GRACE
        if tick.kind == "skipped_dst":
            out.append(Decision(tick.at, "skipped_dst", tick.note))
        elif not missed or schedule.catchup == "all" or (
                schedule.catchup == "latest" and tick.at == newest):
            out.append(Decision(tick.at, "fire"))
        else:
            late = int((now - tick.at).total_seconds())
            out.append(Decision(tick.at, "skipped_catchup",
                                f"missed by {late} s while no scheduler ran "
                                f"(catchup: {schedule.catchup})"))
    return out, until


def _claim(session: DbSession, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """Insert the ticks' ledger rows in one statement; the (schedule, instant) of those
    this transaction decided (another scheduler decided the rest first)."""
    if not rows:
        return set()
    conn = session.connection()
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    decided_at = dt.datetime.now(dt.UTC)
    done = conn.execute(insert(ScheduleTick).values(
        [{**row, "decided_at": decided_at} for row in rows]).on_conflict_do_nothing()
        .returning(ScheduleTick.schedule_id, ScheduleTick.scheduled_for))
    return {(sid, _key(at)) for sid, at in done}


def _key(at: dt.datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).isoformat()


def _settle(session: DbSession, schedule_id: str, at: dt.datetime, outcome: str,
            run_id: str | None = None, reason: str | None = None) -> None:
    session.execute(update(ScheduleTick).where(
        ScheduleTick.schedule_id == schedule_id, ScheduleTick.scheduled_for == at
    ).values(outcome=outcome, run_id=run_id, reason=reason))


def active_runs(session: DbSession, schedule_id: str) -> list[str]:
    return _active(session, [schedule_id]).get(schedule_id, [])


def _active(session: DbSession, schedule_ids: list[str]) -> dict[str, list[str]]:
    """The unfinished runs of these schedules, oldest first, in one statement."""
    if not schedule_ids:
        return {}
    out: dict[str, list[str]] = {}
    for sid, run_id in session.execute(select(Run.trigger_source_id, Run.id).where(
            Run.trigger_source_id.in_(schedule_ids),
            Run.status.not_in(dsl.FINISHED_RUN_STATUSES)).order_by(Run.created_at)):
        out.setdefault(str(sid), []).append(run_id)
    return out


def _start_of(schedule: Schedule, workflow: Workflow, at: dt.datetime,
              run_id: str | None = None) -> Any:
    from capability.runs import starts

    return starts.Start(workflow, dict(schedule.params), "schedule",
                        who=f"schedule {schedule.id}", source=("schedule", schedule.id),
                        scheduled_for=at, run_id=run_id)


def _release_buffer(session: DbSession, dispatcher: Dispatcher, schedule: Schedule,
                    workflow: Workflow, active: list[str], report: PassReport) -> None:
    """The buffered tick of a schedule whose active run ended: started now."""
    from capability.runs import starts

    at = schedule.buffered_for
    if at is None or active:
        return
    schedule.buffered_for = None
    out = starts.open_many(session, dispatcher, [_start_of(schedule, workflow, at)])[0]
    if isinstance(out, starts.NotStarted):
        _settle(session, schedule.id, at, "failed", None, str(out))
        report.count("failed")
        return
    active.append(out.id)
    _settle(session, schedule.id, at, "fired", out.id,
            "started when the active run ended (overlap: buffer_one)")
    report.count("fired")


@dataclass
class _Tick:
    """A tick this pass means to decide, and what it leads to once claimed."""

    schedule: Schedule
    workflow: Workflow | None
    at: dt.datetime
    outcome: str
    reason: str | None = None
    run_id: str | None = None  # chosen now: the ledger row names the run it starts
    cancel: list[str] = field(default_factory=list)  # overlap: cancel_other

    def row(self) -> dict[str, Any]:
        return {"schedule_id": self.schedule.id, "scheduled_for": self.at,
                "outcome": self.outcome, "reason": self.reason, "run_id": self.run_id}


def _ticks_of(schedule: Schedule, workflow: Workflow, decisions: list[Decision],
              active: list[str]) -> list[_Tick]:
    """The overlap policy over a schedule's due ticks (``active``: its unfinished runs,
    to which each tick that fires adds its own)."""
    out = []
    buffered = schedule.buffered_for is not None
    for d in decisions:
        if d.outcome != "fire":
            out.append(_Tick(schedule, workflow, d.at, d.outcome, d.reason))
            continue
        tick = _Tick(schedule, workflow, d.at, "fired", run_id=new_id())
        if active and schedule.overlap == "cancel_other":
            tick.cancel = list(active)
            active.clear()
        elif active and schedule.overlap != "allow":
            tick.run_id = None
            if schedule.overlap == "buffer_one" and not buffered:
                tick.outcome = "buffered"
                tick.reason = f"waits for run {active[-1]} to end (overlap: buffer_one)"
                buffered = True
            else:
                why = ("one run already waits" if schedule.overlap == "buffer_one"
                       else "overlap: skip")
                tick.outcome = "skipped_overlap"
                tick.reason = f"run {active[-1]} is still active ({why})"
        if tick.run_id is not None:
            active.append(tick.run_id)
        out.append(tick)
    return out


def _fire(session: DbSession, dispatcher: Dispatcher, ticks: list[_Tick],
          report: PassReport) -> None:
    """Cancel what ``cancel_other`` replaces, then start every claimed tick's run in one
    go (``runs.starts.open_many``); a run that cannot start (params no longer valid, a
    quota) makes its tick ``failed``, with the reason."""
    from capability.runs import service as runs
    from capability.runs import starts

    for tick in ticks:
        for run_id in tick.cancel:
            runs.cancel_for_trigger(session, run_id, f"schedule {tick.schedule.id}")
        if tick.outcome == "buffered":
            tick.schedule.buffered_for = tick.at
    firing = [t for t in ticks if t.run_id is not None and t.workflow is not None]
    opened = starts.open_many(session, dispatcher, [
        _start_of(t.schedule, t.workflow, t.at, t.run_id) for t in firing if t.workflow])
    for tick, out in zip(firing, opened, strict=True):
        if isinstance(out, starts.NotStarted):
            tick.outcome, tick.reason = "failed", str(out)
            _settle(session, tick.schedule.id, tick.at, "failed", None, str(out))
    for tick in ticks:
        report.count(tick.outcome)


def decide(session: DbSession, dispatcher: Dispatcher, schedule_ids: list[str],
           now: dt.datetime, catchup_max: int, report: PassReport) -> None:
    """Decide the due ticks of these schedules in one transaction (the module's
    argument holds for each), with a statement per step rather than per tick: the
    ledger rows in one INSERT, the runs in one ``open_many``. A thousand schedules that
    fall due on the same second are then a few transactions, not a thousand."""
    outbox.begin(session, dispatcher)
    try:
        query = select(Schedule).where(Schedule.id.in_(schedule_ids),
                                       Schedule.next_due <= now).order_by(Schedule.next_due)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=Schedule)
        schedules = session.execute(query).scalars().all()  # others: another has them
        _decide_locked(session, dispatcher, list(schedules), now, catchup_max, report)
        box = outbox.commit(session, deliver=False)
    except BaseException:
        outbox.rollback(session)
        raise
    box.deliver(tolerant=True)


def _decide_locked(session: DbSession, dispatcher: Dispatcher, schedules: list[Schedule],
                   now: dt.datetime, catchup_max: int, report: PassReport) -> None:
    """Decide the due ticks of schedules whose rows this transaction holds."""
    if not schedules:
        return
    workflows = {w.id: w for w in session.execute(select(Workflow).where(
        Workflow.id.in_({s.workflow_id for s in schedules}))).scalars()}
    watched = [s.id for s in schedules if s.overlap != "allow" or s.buffered_for is not None]
    active = _active(session, watched)
    planned: list[_Tick] = []
    for schedule in schedules:
        report.schedules += 1
        workflow = workflows.get(schedule.workflow_id)
        if workflow is None or workflow.deleted_at is not None:
            schedule.disabled_reason = "its workflow was deleted"
            schedule.next_due = None
            continue
        runs = active.setdefault(schedule.id, [])
        _release_buffer(session, dispatcher, schedule, workflow, runs, report)
        decisions, until = plan(schedule, now, catchup_max)
        planned += _ticks_of(schedule, workflow, decisions, runs)
        set_committed_value(schedule, "decided_until", max(schedule.decided_until, until))
    claimed = _claim(session, [t.row() for t in planned])
    # A tick another scheduler decided first is left to it (and so is what this pass
    # meant to do of it: its run, a cancel, a buffer).
    ours = [t for t in planned if (t.schedule.id, _key(t.at)) in claimed]
    _fire(session, dispatcher, ours, report)
    moved = [s for s in schedules if not s.disabled_reason]
    for schedule in moved:
        set_committed_value(schedule, "next_due", next_due(schedule, now))
    _moved(session, moved)


# Where each schedule stands, one statement for the chunk (the ORM would send one
# UPDATE per schedule, and diff each for the audit trail, which leaves these out).
_MOVE = text(
    "UPDATE apg_schedule SET decided_until = v.decided_until, next_due = v.next_due "
    "FROM unnest(CAST(:ids AS varchar[]), CAST(:decided AS timestamptz[]), "
    "CAST(:due AS timestamptz[])) AS v(id, decided_until, next_due) "
    "WHERE apg_schedule.id = v.id")
_MOVE_ONE = update(Schedule).where(Schedule.id == bindparam("sid")).values(
    decided_until=bindparam("decided"), next_due=bindparam("due"))


def _moved(session: DbSession, schedules: list[Schedule]) -> None:
    if not schedules:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(_MOVE, {"ids": [s.id for s in schedules],
                             "decided": [s.decided_until for s in schedules],
                             "due": [s.next_due for s in schedules]})
        return
    conn.execute(_MOVE_ONE, [{"sid": s.id, "decided": s.decided_until, "due": s.next_due}
                             for s in schedules])


def run_pass(session: DbSession, dispatcher: Dispatcher, now: dt.datetime,
             catchup_max: int = 100) -> PassReport:
    """Decide every schedule due at ``now``; each in its own transaction."""
    report = PassReport()
    seen: set[str] = set()
    while True:
        query = select(Schedule.id).where(Schedule.next_due <= now)
        if seen:
            query = query.where(Schedule.id.not_in(seen))
        ids = list(session.execute(query.order_by(Schedule.next_due).limit(BATCH)).scalars())
        session.rollback()  # no read transaction held between decisions
        if not ids:
            return report
        seen.update(ids)
        for chunk in (ids[i:i + CHUNK] for i in range(0, len(ids), CHUNK)):
            try:
                decide(session, dispatcher, chunk, now, catchup_max, report)
                continue
            except Exception:
                log.warning("schedules: a chunk failed; deciding its schedules one by one")
            for schedule_id in chunk:  # one broken schedule never stops the others
                try:
                    decide(session, dispatcher, [schedule_id], now, catchup_max, report)
                except Exception:
                    log.exception("schedule %s: its ticks could not be decided", schedule_id)
                    report.count("error")
