"""The reaper: the database says what should be under way; make Redis agree.

State lives in the database and Redis is only the transport (DESIGN, reliability
rules), so whatever Redis or a dead worker lost can be rebuilt from the attempts of
live runs. One pass (``reap``):

1. lets RQ clean each queue's started registry: jobs whose worker stopped
   heartbeating move to the failed registry, where step 3 sees them;
2. re-sends a ``queued`` or ``scheduled`` attempt whose job is gone from Redis (flushed
   or restarted without persistence), stuck, or was taken by a worker that died before
   the attempt began; a scheduled one keeps the rest of its wait. The job id is the
   attempt's, so a duplicate send is harmless: ``begin_attempt`` starts an attempt once;
3. records a ``running`` attempt whose worker died (killed, crashed, or killed by its
   own watchdog), whose job failed without reporting, or whose live worker is on no job
   or another one (the job that went on with it ended), as ``lost``: a retriable
   failure through ``runner.complete_attempt``, which counts one result per attempt,
   so a late completion (from a worker thought dead) is ignored, and the retry decision
   (``state.retry_decision``, as for any failed attempt) says what follows. A ``delay``
   attempt waiting for its end gets its ``-end`` job back, with the rest of the wait,
   when that job vanished;
4. re-sends the follow-up job of a sub-workflow run that ended while its parent's
   attempt still waits (``subruns.child_finished`` answers a waiting attempt once);
5. stops again what a live worker runs while the database says it must stop (cancelled,
   lost, superseded: ``stops``), as a stop-job command lost in a Redis outage would
   otherwise leave the attempt running to its end;
6. fails an ``agent`` step that has waited for its output past its timeout (the task's
   own, else the definition's default, else ``TASK_DEFAULT_TIMEOUT``), as a retriable
   timeout (``engine.agents.expire``): its retry policy decides, as for any timeout.

Everything is idempotent: two passes at once (two schedulers, a worker starting) may
re-send the same attempt twice but never create an attempt or record a result twice.
A short grace keeps a pass from racing the enqueue that follows every commit.

Is a worker dead? RQ names workers by a random uuid and keeps each one's hash
(pid, hostname, heartbeat) with a TTL, so a SIGKILLed worker drops out only when the
key expires (``WORKER_TTL`` + 60 s, about 90 s), too slow for a run to wait. So:

* the hash has ``death`` (RQ's clean shutdown)                    -> dead at once;
* the worker shares our pid space (``AppWorker`` records boot id + pid namespace, see
  ``app.runtime.worker.pid_space``) and its pid is gone           -> dead at once;
* any other worker with a hash                                    -> alive (its
  heartbeat keeps the hash; RQ expires it when the worker stops beating);
* no hash: dead only once it has stayed missing for ``WORKER_GONE_AFTER`` (a live
  worker whose hash Redis lost writes it back within RQ's 30 s monitoring heartbeat).
  The first miss is remembered in Redis, so every reaper shares the clock.

A pid reused by an unrelated process keeps a dead worker "alive" until its hash
expires; then the missing-hash rule applies (a few minutes at worst, never forever).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from flask import Flask
from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import StartedJobRegistry
from sqlalchemy import bindparam, or_, select

from app.extensions import DbSession
from app.runtime.worker import runtime_hooks
from capability.dsl.durations import parse_duration
from capability.dsl.statuses import FINISHED_RUN_STATUSES, RunStatus, TaskStatus
from capability.engine import outbox, stops
from capability.engine.dispatch import Dispatcher, Send, dispatcher_for
from capability.engine.rq_state import (
    ALIVE_JOB,
    JobState,
    RedisView,
    WorkerLiveness,
    job_id,
    job_states,
)
from capability.models import (
    AttemptStatus,
    Run,
    TaskAttempt,
    TaskItem,
    TaskKind,
    TaskRun,
    WorkflowVersion,
)

log = logging.getLogger(__name__)

# Seconds an attempt must exist before its missing job counts: the job is enqueued
# right after the commit that created the attempt, and a pass must not race that.
GRACE_SECONDS = 5.0
# The watchdog kills a worker 60 s past its job timeout, which is the task's + 30 s:
# a running attempt with no job and no word from its worker past that is lost.
BACKSTOP_SECONDS = 90.0 + GRACE_SECONDS

LOCK_KEY = "apg:reaper:lock"
# A pass takes well under a second; a process killed in one leaves the lock behind
# until it expires, and the next scheduler's passes wait that long.
LOCK_SECONDS = 15
# Delete the lock only if it is still ours (it may have expired and been taken).
_RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('del', KEYS[1]) end return 0")
# The follow-up job of a finished sub-workflow run, as ``Dispatcher.send`` names it (on
# the queue of the parent's attempt).
CHILD_JOB_PREFIX = "apg-child-"


@dataclass
class ReapReport:
    checked: int = 0  # live attempts looked at
    resent: int = 0  # queued/scheduled attempts sent to RQ again
    ends_resent: int = 0  # `delay` ends sent again
    lost: int = 0  # running attempts recorded as lost
    followups_resent: int = 0  # "your sub-workflow run ended" jobs sent again
    stopped: int = 0  # attempts a live worker ran that the database says must stop
    timed_out: int = 0  # agent steps that waited for their output past their timeout
    dead_workers: list[str] = field(default_factory=list)
    skipped: bool = False  # another pass held the lock

    @property
    def acted(self) -> int:
        return (self.resent + self.ends_resent + self.lost + self.followups_resent
                + self.stopped + self.timed_out)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if self.skipped:
            return "another reaper pass is running; nothing done"
        dead = f" (dead workers: {', '.join(self.dead_workers)})" if self.dead_workers else ""
        return (f"checked {self.checked} live attempt(s): re-sent {self.resent}, delay ends "
                f"re-sent {self.ends_resent}, sub-workflow follow-ups re-sent "
                f"{self.followups_resent}, lost {self.lost}, stopped {self.stopped}, agent "
                f"steps timed out {self.timed_out}{dead}")


@dataclass
class _Candidate:
    """A live current attempt, as plain data (the read transaction ends before acting)."""

    id: str
    number: int
    status: str
    queue: str
    worker: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    not_before: dt.datetime | None
    task_type: str
    timeout: float | None


# Columns, not ORM objects: a pass during a 1,000-task fan-out reads 1,000 live
# attempts every few seconds, and three ORM objects per row (with an element's row
# loaded one by one) cost the scheduler ~8 MB of heap it then kept.
_LIVE = (
    select(TaskAttempt.id, TaskAttempt.number, TaskAttempt.status, TaskAttempt.queue,
           TaskAttempt.worker, TaskAttempt.created_at, TaskAttempt.started_at,
           TaskAttempt.not_before, TaskAttempt.item_id, TaskRun.task_id, TaskRun.kind,
           TaskRun.current_attempt_id.label("task_current"),
           TaskItem.current_attempt_id.label("item_current"),
           Run.status.label("run_status"), Run.version_id)
    .join(TaskRun, TaskAttempt.task_run_id == TaskRun.id)
    .join(Run, TaskRun.run_id == Run.id)
    .outerjoin(TaskItem, TaskItem.id == TaskAttempt.item_id)
    .where(TaskAttempt.status.in_((AttemptStatus.QUEUED, AttemptStatus.SCHEDULED,
                                   AttemptStatus.RUNNING)),
           Run.status.in_((RunStatus.QUEUED.value, RunStatus.RUNNING.value,
                           RunStatus.PAUSED.value)))
)
_DEFINITIONS = select(WorkflowVersion.id, WorkflowVersion.definition).where(
    WorkflowVersion.id.in_(bindparam("ids", expanding=True)))


def task_facts(definition: dict[str, Any]) -> dict[str, tuple[str, str | None, float | None]]:
    """Per task id of a saved definition: its type, its undo step's type and its
    timeout in seconds (its own, else the definition's default; an undo step has its
    task's). Read from the stored JSON, which was valid when saved: the reaper needs no
    more, so the scheduler never builds the models of every task type (pydantic, the
    expression sandbox), nor the engine's plans."""
    default = (definition.get("defaults") or {}).get("timeout")
    facts = {}
    for task in definition.get("tasks") or ():
        timeout = task.get("timeout", default)
        undo = task.get("compensate") or {}
        facts[task["id"]] = (task["type"], undo.get("type"),
                             parse_duration(timeout) if timeout is not None else None)
    return facts


def _candidates(session: DbSession, dispatcher: Dispatcher,
                cutoff: dt.datetime | None = None) -> list[_Candidate]:
    """The live attempts a pass looks at. ``cutoff``: leave out queued and scheduled
    attempts created after it, which are within the grace and cannot be acted on (a
    pass during a 1,000-task fan-out then reads none of its fresh attempts)."""
    query = _LIVE if cutoff is None else _LIVE.where(or_(
        TaskAttempt.status == AttemptStatus.RUNNING, TaskAttempt.created_at < cutoff))
    rows = session.execute(query).all()
    versions = sorted({row.version_id for row in rows})
    facts = {version_id: task_facts(definition or {}) for version_id, definition in (
        session.execute(_DEFINITIONS, {"ids": versions}).all() if versions else ())}
    found = []
    for row in rows:
        # Only the attempt whose result counts (a task's, or a for_each element's).
        if (row.item_current if row.item_id else row.task_current) != row.id:
            continue
        # A paused run starts nothing: `resume` sends its waiting attempts again.
        if row.status != AttemptStatus.RUNNING and row.run_status == RunStatus.PAUSED:
            continue
        try:
            task_type, undo_type, timeout = facts[row.version_id][row.task_id]
            if row.kind == TaskKind.COMPENSATION:
                task_type = str(undo_type)
        except Exception:  # one bad row must not stop the recovery of the others
            log.exception("reaper: cannot read the task of attempt %s", row.id)
            continue
        found.append(_Candidate(
            row.id, row.number, row.status, row.queue, row.worker, row.created_at,
            row.started_at, row.not_before, task_type,
            float(timeout) if timeout else dispatcher.settings.task_default_timeout,
        ))
    return found


def _finished_children(session: DbSession, now: dt.datetime,
                       grace: float) -> list[tuple[str, str, str]]:
    """(child run, parent attempt, its queue) for sub-workflow runs that ended while
    their parent's attempt still waits for them."""
    rows = session.execute(
        select(Run.id, Run.parent_attempt_id, TaskAttempt.queue, Run.finished_at)
        .join(TaskAttempt, TaskAttempt.id == Run.parent_attempt_id)
        .where(TaskAttempt.status == AttemptStatus.WAITING,
               Run.status.in_([status.value for status in FINISHED_RUN_STATUSES]))
    ).all()
    return [(child_id, str(attempt_id), queue) for child_id, attempt_id, queue, finished in rows
            if finished is None or (now - finished).total_seconds() >= grace]


def record_lost(session: DbSession, dispatcher: Dispatcher, attempt_id: str,
                reason: str) -> bool:
    """A running attempt that will never report: a retriable failure with status
    ``lost``, in a transaction of its own (what it makes ready is sent after its
    commit). False, and nothing written, when a result was recorded meanwhile."""
    # The engine loads here, when an attempt is lost: a scheduler that never has to
    # record one never imports it.
    from capability.engine import runner, state

    box = outbox.begin(session, dispatcher)
    runner.complete_attempt(session, attempt_id, state.Outcome.failure(reason))
    attempt = session.get(TaskAttempt, attempt_id)
    if attempt is None or attempt.status != AttemptStatus.FAILED or attempt.error != reason:
        outbox.rollback(session)
        return False
    attempt.status = AttemptStatus.LOST
    # Its retry already waited its turn once: to the front of its queue, not behind
    # everything queued since (what else the loss made ready queues as usual).
    owner = session.get(TaskItem, attempt.item_id) if attempt.item_id else attempt.task_run
    retry = owner.current_attempt_id if owner is not None else None
    box.sends = [replace(item, front=True) if item.attempt_id == retry else item
                 for item in box.sends]
    outbox.commit(session)
    return True


def _is_deferred(cand: _Candidate, end: JobState) -> bool:
    """A running `delay` attempt past ``defer_attempt``: waiting for its ``-end`` job.
    ``defer_attempt`` sets ``not_before`` after the attempt began; a retry's
    ``not_before`` is the wait before it began."""
    if end.status is not None:
        return True
    return bool(cand.not_before and cand.started_at and cand.not_before > cand.started_at)


def reap(session: DbSession, conn: Redis, dispatcher: Dispatcher,
         now: dt.datetime | None = None,
         grace: float = GRACE_SECONDS, queues: list[str] | None = None) -> ReapReport:
    """One pass over the live attempts of running (and paused) runs; see the module.
    ``queues``: RQ queues whose started registry to clean besides the attempts' own."""
    now = now or dt.datetime.now(dt.UTC)
    report = ReapReport()
    candidates = _candidates(session, dispatcher, now - dt.timedelta(seconds=grace))
    children = _finished_children(session, now, grace)
    overdue = _overdue_agents(session, dispatcher, now)
    session.rollback()  # no read transaction held while recording (SQLite upgrades fail)
    for name in sorted(set(queues or []) | {c.queue for c in candidates}):
        StartedJobRegistry(name, connection=conn).cleanup()
    ids = [job_id(c.id) for c in candidates]
    ids += [job_id(c.id, end=True) for c in candidates if c.task_type == "delay"]
    ids += [CHILD_JOB_PREFIX + child_id for child_id, _, _ in children]
    workers = WorkerLiveness(conn, now)
    view = RedisView(conn, workers, job_states(conn, ids))
    sends: list[Send] = []
    try:
        for cand in candidates:
            report.checked += 1
            try:
                sends += _reap_one(session, dispatcher, view, cand, now, grace, report)
            except Exception:  # one odd attempt must not stop the recovery of the others
                outbox.rollback(session)
                log.exception("reaper: could not check attempt %s", cand.id)
        for child_id, parent_attempt_id, queue in children:
            # The follow-up telling a parent that its sub-workflow run ended is gone:
            # without it the parent's attempt would wait forever. It is idempotent.
            if not view.alive(CHILD_JOB_PREFIX + child_id, queue)[0]:
                log.warning("reaper: telling attempt %s again that its sub-workflow run %s "
                            "ended", parent_attempt_id, child_id)
                view.discard(CHILD_JOB_PREFIX + child_id, queue)
                sends.append(Send(parent_attempt_id, queue, child_run=child_id, front=True))
                report.followups_resent += 1
        report.timed_out = _expire_agents(session, dispatcher, overdue)
        try:
            report.stopped = stops.stop_again(session, conn, workers)
        except Exception:  # the recovery above must still be sent
            session.rollback()
            log.exception("reaper: could not stop again what must stop")
        workers.bury_dead()
    finally:
        # What was recorded is committed: its follow-up work must go out. (If this
        # process dies first, the next pass finds those attempts without a job.)
        dispatcher.send(sends)
    report.dead_workers = sorted(workers.dead)
    return report


# Agent steps waiting for their output (``waiting_input``), with what their timeout needs.
_WAITING_AGENTS = (
    select(TaskAttempt.id, TaskAttempt.started_at, TaskAttempt.created_at, TaskRun.task_id,
           Run.id.label("run_id"), Run.version_id)
    .join(TaskRun, TaskRun.current_attempt_id == TaskAttempt.id)
    .join(Run, TaskRun.run_id == Run.id)
    .where(TaskAttempt.status == AttemptStatus.WAITING,
           TaskRun.status == TaskStatus.WAITING_INPUT.value, TaskRun.kind == TaskKind.TASK,
           Run.status.in_((RunStatus.RUNNING.value, RunStatus.PAUSED.value)))
)


def _overdue_agents(session: DbSession, dispatcher: Dispatcher,
                    now: dt.datetime) -> list[tuple[str, str, float]]:
    """(run, attempt, timeout in seconds) of agent steps waiting past their timeout."""
    rows = session.execute(_WAITING_AGENTS).all()
    if not rows:
        return []
    versions = sorted({row.version_id for row in rows})
    facts = {version_id: task_facts(definition or {}) for version_id, definition in
             session.execute(_DEFINITIONS, {"ids": versions}).all()}
    found = []
    for row in rows:
        fact = facts.get(row.version_id, {}).get(row.task_id)
        timeout = float(fact[2]) if fact and fact[2] else (
            dispatcher.settings.task_default_timeout)
        began = row.started_at or row.created_at
        if (now - began).total_seconds() > timeout:
            found.append((row.run_id, row.id, timeout))
    return found


def _expire_agents(session: DbSession, dispatcher: Dispatcher,
                   overdue: list[tuple[str, str, float]]) -> int:
    if not overdue:
        return 0
    # The engine loads here, when a step is overdue: a scheduler that never has one
    # never imports it.
    from capability.engine import agents

    count = 0
    for run_id, attempt_id, timeout in overdue:
        try:
            if agents.expire(session, dispatcher, run_id, attempt_id, timeout):
                log.warning("reaper: agent step attempt %s: %s", attempt_id,
                            agents.timeout_message(timeout))
                count += 1
        except Exception:  # one odd step must not stop the others
            log.exception("reaper: could not time out agent step attempt %s", attempt_id)
    return count


def _reap_one(session: DbSession, dispatcher: Dispatcher, view: RedisView, cand: _Candidate,
              now: dt.datetime, grace: float, report: ReapReport) -> list[Send]:
    main, end = job_id(cand.id), job_id(cand.id, end=True)
    wait = max(0.0, (cand.not_before - now).total_seconds()) if cand.not_before else 0.0
    if cand.status in (AttemptStatus.QUEUED, AttemptStatus.SCHEDULED):
        if (now - cand.created_at).total_seconds() < grace:
            return []
        alive, why = view.alive(main, cand.queue)
        if alive:
            return []
        log.warning("reaper: sending %s attempt %s again (%s)", cand.status, cand.id, why)
        view.discard(main, cand.queue)
        report.resent += 1
        return [Send(cand.id, cand.queue, delay=wait, timeout=cand.timeout, front=True)]
    if cand.task_type == "delay" and _is_deferred(cand, view.state(end)):
        if view.alive(end, cand.queue)[0]:
            return []
        if view.state(main).status is not None and view.alive(main, cand.queue)[0]:
            return []  # still in run_attempt, which sends the end after its commit
        log.warning("reaper: sending the end of delay attempt %s again", cand.id)
        view.discard(end, cand.queue)
        report.ends_resent += 1
        return [Send(cand.id, cand.queue, delay=wait, finish_delay=True, front=True)]
    reason = _lost_reason(view, cand, now, grace)
    if reason is None:
        return []
    if not record_lost(session, dispatcher, cand.id, reason):
        return []  # it reported meanwhile: that result counts
    log.warning("reaper: attempt %s lost: %s", cand.id, reason)
    report.lost += 1
    return []


def _lost_reason(view: RedisView, cand: _Candidate, now: dt.datetime, grace: float) -> str | None:
    """Why a running attempt will never report, or None while it may still."""
    jid = job_id(cand.id)
    main = view.state(jid)
    started = cand.started_at or cand.created_at
    running_for = (now - started).total_seconds()
    who = cand.worker or main.worker
    prefix = f"attempt {cand.number} was lost"
    if main.status is not None and main.status not in ALIVE_JOB:
        # Failed without reporting: an error outside the task, or a stopped job.
        detail = _failure_detail(view.conn, jid)
        return f"{prefix}: its job {main.status} on worker {who}" + (
            f" ({detail})" if detail else "")
    state = view.workers.state(who)
    if state == "dead":
        return f"{prefix}: worker {who} died while running it"
    if main.status is not None:
        return None  # queued, scheduled or started on a live worker
    # The job is gone from Redis while the worker lives (or may).
    if running_for < grace:
        return None
    current = view.workers.current_job(who)
    if state == "alive" and current and current != jid:
        return f"{prefix}: worker {who} moved on to other work without reporting it"
    if state == "alive" and not current:
        # A live worker holds the id of the attempt it runs as its current job from
        # before the attempt begins until it is recorded, also for an attempt a job went
        # on with (``AppWorker.continue_as``), which has no RQ job of its own: idle, it
        # is running nothing. Its job ended (failed, stopped) without recording it.
        return (f"{prefix}: worker {who} is idle: the job that ran it ended without "
                "reporting it")
    if running_for > (cand.timeout or 0) + BACKSTOP_SECONDS:
        return f"{prefix}: no report {running_for:.0f}s after it started (past its timeout)"
    return None


def _failure_detail(conn: Redis, jid: str) -> str:
    try:
        result = Job.fetch(jid, connection=conn).latest_result()
    except NoSuchJobError:
        return ""
    text = (result.exc_string or "").strip() if result is not None else ""
    return text.splitlines()[-1][:300] if text else ""


# -- running it --------------------------------------------------------------------

def reap_locked(app: Flask, grace: float = GRACE_SECONDS) -> ReapReport:
    """One pass unless another process is in one (then ``skipped``). Inside the app
    context. The lock only saves work: passes at once would be correct, too."""
    from app.extensions import db

    dispatcher = dispatcher_for(app, coalesce=True)
    conn = dispatcher.conn
    token = f"{os.getpid()}:{uuid.uuid4().hex}"
    if not conn.set(LOCK_KEY, token, nx=True, ex=LOCK_SECONDS):
        return ReapReport(skipped=True)
    try:
        report = reap(db.session, conn, dispatcher, grace=grace,
                      queues=list(dispatcher.settings.queues))
    finally:
        db.session.remove()
        conn.eval(_RELEASE, 1, LOCK_KEY, token)
    if report.acted:
        log.warning("reaper: %s", report)
    return report


def _maintenance(app: Flask) -> None:
    reap_locked(app)


def install(app: Flask) -> None:
    """Hook the reaper into the worker and scheduler processes (``reg.on_ready``)."""
    hooks = runtime_hooks(app)
    for kind, callback in (("worker_start", _maintenance), ("maintenance", _maintenance)):
        listed = getattr(hooks, kind)
        if callback not in listed:
            listed.append(callback)
