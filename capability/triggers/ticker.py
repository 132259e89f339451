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

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.extensions import DbSession
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
CHUNK = 50  # schedules decided per transaction


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


def _claim(session: DbSession, schedule_id: str, at: dt.datetime, outcome: str,
           reason: str | None) -> bool:
    """Insert the tick's ledger row; False when another scheduler decided it first."""
    conn = session.connection()
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    done = conn.execute(insert(ScheduleTick).values(
        schedule_id=schedule_id, scheduled_for=at, decided_at=dt.datetime.now(dt.UTC),
        outcome=outcome, reason=reason).on_conflict_do_nothing())
    return bool(done.rowcount)


def _settle(session: DbSession, schedule_id: str, at: dt.datetime, outcome: str,
            run_id: str | None = None, reason: str | None = None) -> None:
    session.execute(update(ScheduleTick).where(
        ScheduleTick.schedule_id == schedule_id, ScheduleTick.scheduled_for == at
    ).values(outcome=outcome, run_id=run_id, reason=reason))


def active_runs(session: DbSession, schedule_id: str) -> list[str]:
    return list(session.execute(select(Run.id).where(
        Run.trigger_source_id == schedule_id,
        Run.status.not_in(dsl.FINISHED_RUN_STATUSES)).order_by(Run.created_at)).scalars())


def _start(session: DbSession, dispatcher: Dispatcher, schedule: Schedule, at: dt.datetime,
           workflow: Workflow) -> tuple[str, str | None, str | None]:
    """Start the tick's run inside the caller's transaction: (outcome, run id, reason).
    A run that cannot start (params no longer valid, a quota) is ``failed``, no run."""
    from capability.runs import service as runs

    try:
        run = runs.open_triggered(
            session, dispatcher, workflow, dict(schedule.params), trigger="schedule",
            source=("schedule", schedule.id), scheduled_for=at,
            who=f"schedule {schedule.id}")
    except runs.NotStarted as exc:
        return "failed", None, str(exc)
    return "fired", run.id, None


def _overlap(session: DbSession, dispatcher: Dispatcher, schedule: Schedule,
             at: dt.datetime) -> tuple[str, str | None] | None:
    """What the overlap policy says of a tick while a run of the schedule is active:
    (outcome, reason), or None to start it now."""
    from capability.runs import service as runs

    if schedule.overlap == "allow":
        return None
    active = active_runs(session, schedule.id)
    if not active:
        return None
    if schedule.overlap == "cancel_other":
        for run_id in active:
            runs.cancel_for_trigger(session, run_id, f"schedule {schedule.id}")
        return None
    if schedule.overlap == "buffer_one" and schedule.buffered_for is None:
        schedule.buffered_for = at
        return "buffered", f"waits for run {active[-1]} to end (overlap: buffer_one)"
    why = "one run already waits" if schedule.overlap == "buffer_one" else "overlap: skip"
    return "skipped_overlap", f"run {active[-1]} is still active ({why})"


def _release_buffer(session: DbSession, dispatcher: Dispatcher, schedule: Schedule,
                    workflow: Workflow, report: PassReport) -> None:
    at = schedule.buffered_for
    if at is None or active_runs(session, schedule.id):
        return
    schedule.buffered_for = None
    outcome, run_id, reason = _start(session, dispatcher, schedule, at, workflow)
    _settle(session, schedule.id, at, outcome, run_id,
            reason or "started when the active run ended (overlap: buffer_one)")
    report.count(outcome)


def _decide_locked(session: DbSession, dispatcher: Dispatcher, schedule: Schedule,
                   now: dt.datetime, catchup_max: int, report: PassReport) -> None:
    """Decide the due ticks of a schedule whose row this transaction holds."""
    report.schedules += 1
    workflow = session.get(Workflow, schedule.workflow_id)
    if workflow is None or workflow.deleted_at is not None:
        schedule.disabled_reason = "its workflow was deleted"
        schedule.next_due = None
        return
    _release_buffer(session, dispatcher, schedule, workflow, report)
    decisions, until = plan(schedule, now, catchup_max)
    for d in decisions:
        outcome, reason = d.outcome, d.reason
        if not _claim(session, schedule.id, d.at, outcome if outcome != "fire" else
                      "fired", reason):
            continue  # decided by another scheduler
        run_id = None
        if outcome == "fire":
            held = _overlap(session, dispatcher, schedule, d.at)
            if held is not None:
                outcome, reason = held
            else:
                outcome, run_id, failed = _start(session, dispatcher, schedule, d.at, workflow)
                reason = failed or reason
            _settle(session, schedule.id, d.at, outcome, run_id, reason)
        report.count(outcome)
    schedule.decided_until = max(schedule.decided_until, until)
    schedule.next_due = next_due(schedule, now)


def decide(session: DbSession, dispatcher: Dispatcher, schedule_ids: list[str],
           now: dt.datetime, catchup_max: int, report: PassReport) -> None:
    """Decide the due ticks of these schedules in one transaction (the module's
    argument holds for each): one commit for many ticks, the pass's cost when a
    thousand schedules fall due on the same second."""
    outbox.begin(session, dispatcher)
    try:
        query = select(Schedule).where(Schedule.id.in_(schedule_ids),
                                       Schedule.next_due <= now).order_by(Schedule.next_due)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=Schedule)
        for schedule in session.execute(query).scalars().all():  # others: another has them
            _decide_locked(session, dispatcher, schedule, now, catchup_max, report)
        box = outbox.commit(session, deliver=False)
    except BaseException:
        outbox.rollback(session)
        raise
    box.deliver(tolerant=True)


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
