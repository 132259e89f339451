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
3. records a ``running`` attempt whose worker died, or whose job failed without
   reporting (a killed work horse), as ``lost``: a retriable failure through
   ``runner.complete_attempt``, which counts one result per attempt, so a late
   completion from a horse that outlived its worker is ignored, and the retry policy
   decides what follows. A ``delay`` attempt waiting for its end gets its ``-end`` job
   back, with the rest of the wait, when that job vanished;
4. re-sends the follow-up job of a sub-workflow run that ended while its parent's
   attempt still waits (``subruns.child_finished`` answers a waiting attempt once).

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
from dataclasses import asdict, dataclass, field
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.worker import Worker
from sqlalchemy import select

from app.runtime.worker import PID_SPACE_FIELD, pid_alive, pid_space, runtime_hooks
from capability import dsl
from capability.dsl import RunStatus
from capability.engine import compensation, runner
from capability.engine.dispatch import JOB_PREFIX, Dispatcher, Send
from capability.models import Run, TaskAttempt, TaskRun

log = logging.getLogger(__name__)

# Seconds an attempt must exist before its missing job counts: the job is enqueued
# right after the commit that created the attempt, and a pass must not race that.
GRACE_SECONDS = 5.0
# A live worker rewrites a lost hash within RQ's job-monitoring heartbeat (30 s) or its
# idle heartbeat (WORKER_TTL - 15 s); twice that without a hash means it is gone.
WORKER_GONE_AFTER = 60.0
# RQ kills a horse at its job timeout + 60 s and the job timeout is the task's + 30 s:
# a running attempt with no job and no word from its worker past that is lost.
BACKSTOP_SECONDS = 90.0 + GRACE_SECONDS

LOCK_KEY = "apg:reaper:lock"
LOCK_SECONDS = 60
# Delete the lock only if it is still ours (it may have expired and been taken).
_RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('del', KEYS[1]) end return 0")
GONE_KEY = "apg:reaper:worker-gone:"
GONE_MEMORY_SECONDS = 3600

ALIVE_JOB = ("queued", "scheduled", "started", "deferred", "created")
# The follow-up job of a finished sub-workflow run, as ``Dispatcher.send`` names it.
CHILD_JOB_PREFIX = "apg-child-"
CHILD_JOB_QUEUE = "default"
WORKER_KEY = Worker.redis_worker_namespace_prefix


@dataclass
class ReapReport:
    checked: int = 0  # live attempts looked at
    resent: int = 0  # queued/scheduled attempts sent to RQ again
    ends_resent: int = 0  # `delay` ends sent again
    lost: int = 0  # running attempts recorded as lost
    followups_resent: int = 0  # "your sub-workflow run ended" jobs sent again
    dead_workers: list[str] = field(default_factory=list)
    skipped: bool = False  # another pass held the lock

    @property
    def acted(self) -> int:
        return self.resent + self.ends_resent + self.lost + self.followups_resent

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if self.skipped:
            return "another reaper pass is running; nothing done"
        dead = f" (dead workers: {', '.join(self.dead_workers)})" if self.dead_workers else ""
        return (f"checked {self.checked} live attempt(s): re-sent {self.resent}, delay ends "
                f"re-sent {self.ends_resent}, sub-workflow follow-ups re-sent "
                f"{self.followups_resent}, lost {self.lost}{dead}")


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


@dataclass
class _JobState:
    status: str | None  # None: Redis has no such job
    worker: str | None


def _aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class _Workers:
    """Worker liveness, asked once per worker and pass."""

    def __init__(self, conn: Redis, now: dt.datetime) -> None:
        self.conn = conn
        self.now = now.timestamp()
        self.space = pid_space()
        self._seen: dict[str, tuple[str, str | None]] = {}
        self.dead: set[str] = set()

    def state(self, name: str | None) -> str:
        """``alive``, ``dead`` or ``unknown`` (no hash yet, not missing for long)."""
        return self._look(name)[0] if name else "unknown"

    def current_job(self, name: str | None) -> str | None:
        return self._look(name)[1] if name else None

    def _look(self, name: str) -> tuple[str, str | None]:
        if name not in self._seen:
            self._seen[name] = self._decide(name)
            if self._seen[name][0] == "dead":
                self.dead.add(name)
        return self._seen[name]

    def _decide(self, name: str) -> tuple[str, str | None]:
        raw = self.conn.hgetall(WORKER_KEY + name)
        data = {_text(k): _text(v) for k, v in raw.items()}
        gone_key = GONE_KEY + name
        if not data.get("birth"):
            # No hash, or only the heartbeat field a live worker writes first after Redis
            # lost its hash (the rest follows within a heartbeat).
            self.conn.set(gone_key, self.now, nx=True, ex=GONE_MEMORY_SECONDS)
            if data.get("last_heartbeat"):
                return "unknown", None
            first = float(_text(self.conn.get(gone_key)) or self.now)
            return ("dead" if self.now - first >= WORKER_GONE_AFTER else "unknown"), None
        current = data.get("current_job") or None
        if data.get("death") or self.local_pid_gone(data):
            # Once its hash expires, a worker known dead stays dead without another wait.
            self.conn.set(gone_key, 0, ex=GONE_MEMORY_SECONDS)
            return "dead", current
        # Alive: a later loss of its hash starts a fresh wait.
        self.conn.delete(gone_key)
        return "alive", current

    def local_pid_gone(self, data: dict[str | None, str | None]) -> bool:
        pid = data.get("pid")
        return bool(self.space and data.get(PID_SPACE_FIELD) == self.space and pid
                    and pid.isdigit() and not pid_alive(int(pid)))

    def bury_dead(self) -> None:
        """Unregister registered workers of this pid space whose process is gone, so
        worker lists and counts drop them now rather than when their key expires."""
        for key in Worker.all_keys(connection=self.conn):
            raw = self.conn.hgetall(key)
            data = {_text(k): _text(v) for k, v in raw.items()}
            if data.get("death") or not self.local_pid_gone(data):
                continue
            worker = Worker.find_by_key(key, connection=self.conn)
            if worker is not None:
                worker.register_death()  # RQ's own: unregisters, keeps the hash 60 s
                name = key[len(WORKER_KEY):]
                self.conn.set(GONE_KEY + name, 0, ex=GONE_MEMORY_SECONDS)
                self.dead.add(name)


def job_id(attempt_id: str, end: bool = False) -> str:
    return JOB_PREFIX + attempt_id + ("-end" if end else "")


def _job_states(conn: Redis, ids: list[str]) -> dict[str, _JobState]:
    states: dict[str, _JobState] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        with conn.pipeline(transaction=False) as pipe:
            for jid in chunk:
                pipe.hmget(Job.key_for(jid), "status", "worker_name")
            rows = pipe.execute()
        for jid, (status, worker) in zip(chunk, rows, strict=True):
            states[jid] = _JobState(_text(status) or None, _text(worker) or None)
    return states


class _Redis:
    """What RQ holds, read once per pass where it can be."""

    # Past this many lookups in one list, read the whole list once instead of an
    # LPOS (a scan of the list) per job.
    SNAPSHOT_AFTER = 20

    def __init__(self, conn: Redis, workers: _Workers, states: dict[str, _JobState]) -> None:
        self.conn = conn
        self.workers = workers
        self.states = states
        self._lookups: dict[str, int] = {}
        self._lists: dict[str, set[str]] = {}

    def state(self, jid: str) -> _JobState:
        if jid not in self.states:
            self.states.update(_job_states(self.conn, [jid]))
        return self.states[jid]

    def _in_list(self, key: str, jid: str) -> bool:
        if key not in self._lists:
            self._lookups[key] = self._lookups.get(key, 0) + 1
            if self._lookups[key] <= self.SNAPSHOT_AFTER:
                return self.conn.lpos(key, jid) is not None
            self._lists[key] = {_text(v) or "" for v in self.conn.lrange(key, 0, -1)}
        return jid in self._lists[key]

    def _waiting_in(self, jid: str, queue: str) -> bool:
        """A job whose hash says queued is really waiting: in its queue, or in the
        intermediate list a worker moves it through (for less than RQ's 1 minute)."""
        q = Queue(queue, connection=self.conn)
        if self._in_list(q.key, jid):
            return True
        if self.conn.lpos(q.intermediate_queue_key, jid) is None:
            return False
        inter = IntermediateQueue(q.key, connection=self.conn)
        return inter.set_first_seen(jid) or not inter.should_be_cleaned_up(jid)

    def alive(self, jid: str, queue: str) -> tuple[bool, str]:
        """Whether RQ will still run this job, and if not, why."""
        state = self.state(jid)
        if state.status is None:
            return False, "its job is missing from Redis"
        if state.status not in ALIVE_JOB:
            return False, f"its job is {state.status} in RQ"
        if state.status == "queued" and not self._waiting_in(jid, queue):
            # Read again: a worker may have taken it between the reads.
            again = _text(self.conn.hget(Job.key_for(jid), "status"))
            if again == "queued":
                return False, "its job is in no queue"
            return again in ALIVE_JOB, f"its job is {again} in RQ"
        if state.status == "scheduled":
            registry = ScheduledJobRegistry(queue, connection=self.conn)
            if self.conn.zscore(registry.key, jid) is None:
                return False, "its job is scheduled but in no scheduled registry"
        if state.status == "started" and self.workers.state(state.worker) == "dead":
            return False, f"worker {state.worker} died"
        return True, ""

    def discard(self, jid: str, queue: str) -> None:
        """Remove what is left of a dead job, so that RQ's own cleanup of it later
        cannot touch the job sent again under the same id."""
        try:
            Job.fetch(jid, connection=self.conn).delete(remove_from_queue=True)
        except NoSuchJobError:
            self.conn.delete(Job.key_for(jid))
        self.conn.lrem(Queue(queue, connection=self.conn).intermediate_queue_key, 0, jid)
        self.states[jid] = _JobState(None, None)


def _candidates(session: Any, dispatcher: Dispatcher) -> list[_Candidate]:
    rows = session.execute(
        select(TaskAttempt, TaskRun, Run)
        .join(TaskRun, TaskAttempt.task_run_id == TaskRun.id)
        .join(Run, TaskRun.run_id == Run.id)
        .where(TaskAttempt.status.in_(("queued", "scheduled", "running")),
               Run.status.in_((RunStatus.RUNNING.value, RunStatus.PAUSED.value)))
    ).all()
    found = []
    for attempt, task, run in rows:
        # Only the attempt whose result counts (a task's, or a for_each element's).
        owner = attempt.item if getattr(attempt, "item_id", None) else task
        if owner is None or owner.current_attempt_id != attempt.id:
            continue
        # A paused run starts nothing: `resume` sends its waiting attempts again.
        if attempt.status != "running" and run.status != RunStatus.RUNNING:
            continue
        try:
            definition = runner.definition_of(run.version)
            spec = compensation.spec_for(definition, task)  # a compensation step's own
        except Exception:  # one bad row must not stop the recovery of the others
            log.exception("reaper: cannot read the task of attempt %s", attempt.id)
            continue
        timeout = dsl.effective_timeout(spec, definition.defaults)
        found.append(_Candidate(
            attempt.id, attempt.number, attempt.status, attempt.queue, attempt.worker,
            _aware(attempt.created_at), attempt.started_at and _aware(attempt.started_at),
            attempt.not_before and _aware(attempt.not_before), spec.type,
            float(timeout) if timeout else dispatcher.default_timeout,
        ))
    return found


def _finished_children(session: Any, now: dt.datetime,
                       grace: float) -> list[tuple[str, str]]:
    """(child run, parent attempt) for sub-workflow runs that ended while their parent's
    attempt still waits for them."""
    rows = session.execute(
        select(Run.id, Run.parent_attempt_id, Run.finished_at)
        .join(TaskAttempt, TaskAttempt.id == Run.parent_attempt_id)
        .where(TaskAttempt.status == "waiting", Run.status.in_(runner.FINISHED_RUN))
    ).all()
    return [(child_id, attempt_id) for child_id, attempt_id, finished in rows
            if finished is None or (now - _aware(finished)).total_seconds() >= grace]


def record_lost(session: Any, attempt_id: str, reason: str) -> tuple[bool, list[Send]]:
    """A running attempt that will never report: a retriable failure with status
    ``lost``. False (and nothing sent) when a result was recorded meanwhile."""
    sends = runner.complete_attempt(session, attempt_id, runner.Outcome.failure(reason),
                                    commit=False)
    attempt = session.get(TaskAttempt, attempt_id)
    recorded = attempt is not None and attempt.status == "failed" and attempt.error == reason
    if recorded:
        attempt.status = "lost"
    session.commit()
    return recorded, sends


def _is_deferred(cand: _Candidate, end: _JobState) -> bool:
    """A running `delay` attempt past ``defer_attempt``: waiting for its ``-end`` job.
    ``defer_attempt`` sets ``not_before`` after the attempt began; a retry's
    ``not_before`` is the wait before it began."""
    if end.status is not None:
        return True
    return bool(cand.not_before and cand.started_at and cand.not_before > cand.started_at)


def reap(session: Any, conn: Redis, dispatcher: Dispatcher, now: dt.datetime | None = None,
         grace: float = GRACE_SECONDS, queues: list[str] | None = None) -> ReapReport:
    """One pass over the live attempts of running (and paused) runs; see the module.
    ``queues``: RQ queues whose started registry to clean besides the attempts' own."""
    now = now or runner.now()
    report = ReapReport()
    candidates = _candidates(session, dispatcher)
    children = _finished_children(session, now, grace)
    session.rollback()  # no read transaction held while recording (SQLite upgrades fail)
    for name in sorted(set(queues or []) | {c.queue for c in candidates}):
        StartedJobRegistry(name, connection=conn).cleanup()
    ids = [job_id(c.id) for c in candidates]
    ids += [job_id(c.id, end=True) for c in candidates if c.task_type == "delay"]
    ids += [CHILD_JOB_PREFIX + child_id for child_id, _ in children]
    workers = _Workers(conn, now)
    view = _Redis(conn, workers, _job_states(conn, ids))
    sends: list[Send] = []
    try:
        for cand in candidates:
            report.checked += 1
            try:
                sends += _reap_one(session, view, cand, now, grace, report)
            except Exception:  # one odd attempt must not stop the recovery of the others
                session.rollback()
                log.exception("reaper: could not check attempt %s", cand.id)
        for child_id, parent_attempt_id in children:
            # The follow-up telling a parent that its sub-workflow run ended is gone:
            # without it the parent's attempt would wait forever. It is idempotent.
            if not view.alive(CHILD_JOB_PREFIX + child_id, CHILD_JOB_QUEUE)[0]:
                log.warning("reaper: telling attempt %s again that its sub-workflow run %s "
                            "ended", parent_attempt_id, child_id)
                view.discard(CHILD_JOB_PREFIX + child_id, CHILD_JOB_QUEUE)
                sends.append(Send(parent_attempt_id, CHILD_JOB_QUEUE, child_run=child_id))
                report.followups_resent += 1
        workers.bury_dead()
    finally:
        # What was recorded is committed: its follow-up work must go out. (If this
        # process dies first, the next pass finds those attempts without a job.)
        dispatcher.send(sends)
    report.dead_workers = sorted(workers.dead)
    return report


def _reap_one(session: Any, view: _Redis, cand: _Candidate, now: dt.datetime, grace: float,
              report: ReapReport) -> list[Send]:
    main, end = job_id(cand.id), job_id(cand.id, end=True)
    wait = max(0.0, (cand.not_before - now).total_seconds()) if cand.not_before else 0.0
    if cand.status in ("queued", "scheduled"):
        if (now - cand.created_at).total_seconds() < grace:
            return []
        alive, why = view.alive(main, cand.queue)
        if alive:
            return []
        log.warning("reaper: sending %s attempt %s again (%s)", cand.status, cand.id, why)
        view.discard(main, cand.queue)
        report.resent += 1
        return [Send(cand.id, cand.queue, delay=wait, timeout=cand.timeout)]
    if cand.task_type == "delay" and _is_deferred(cand, view.state(end)):
        if view.alive(end, cand.queue)[0]:
            return []
        if view.state(main).status is not None and view.alive(main, cand.queue)[0]:
            return []  # still in run_attempt, which sends the end after its commit
        log.warning("reaper: sending the end of delay attempt %s again", cand.id)
        view.discard(end, cand.queue)
        report.ends_resent += 1
        return [Send(cand.id, cand.queue, delay=wait, finish_delay=True)]
    reason = _lost_reason(view, cand, now, grace)
    if reason is None:
        return []
    recorded, sends = record_lost(session, cand.id, reason)
    if not recorded:
        return []  # it reported meanwhile: that result counts
    log.warning("reaper: attempt %s lost: %s", cand.id, reason)
    report.lost += 1
    return sends


def _lost_reason(view: _Redis, cand: _Candidate, now: dt.datetime, grace: float) -> str | None:
    """Why a running attempt will never report, or None while it may still."""
    jid = job_id(cand.id)
    main = view.state(jid)
    started = cand.started_at or cand.created_at
    running_for = (now - started).total_seconds()
    who = cand.worker or main.worker
    prefix = f"attempt {cand.number} was lost"
    if main.status is not None and main.status not in ALIVE_JOB:
        # Failed without reporting: a killed horse, or an error outside the task.
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

def dispatcher_for(app: Flask) -> Dispatcher:
    from app.runtime.redis_conn import get_redis

    return Dispatcher(get_redis(app), app.config["TASK_DEFAULT_TIMEOUT"])


def reap_locked(app: Flask, grace: float = GRACE_SECONDS) -> ReapReport:
    """One pass unless another process is in one (then ``skipped``). Inside the app
    context. The lock only saves work: passes at once would be correct, too."""
    from app.extensions import db

    dispatcher = dispatcher_for(app)
    conn = dispatcher.conn
    token = f"{os.getpid()}:{uuid.uuid4().hex}"
    if not conn.set(LOCK_KEY, token, nx=True, ex=LOCK_SECONDS):
        return ReapReport(skipped=True)
    try:
        report = reap(db.session, conn, dispatcher, grace=grace,
                      queues=list(app.config["RQ_QUEUES"]))
    finally:
        db.session.remove()
        conn.eval(_RELEASE, 1, LOCK_KEY, token)
    if report.acted:
        log.warning("reaper: %s", report)
    return report


def on_horse_killed(app: Flask, jid: str, what: str) -> None:
    """The horse running ``jid`` died under a live worker: record its attempt lost now,
    instead of at the next pass. Not the end of a `delay`, and not an attempt that had
    already deferred: the next pass sends their end again."""
    from app.extensions import db

    if not jid.startswith(JOB_PREFIX) or jid.endswith("-end"):
        return
    attempt_id = jid[len(JOB_PREFIX):]
    attempt = db.session.get(TaskAttempt, attempt_id)
    if attempt is None or attempt.status != "running":
        db.session.rollback()
        return
    started, not_before = attempt.started_at, attempt.not_before
    deferred = bool(started and not_before and _aware(not_before) > _aware(started))
    number = attempt.number
    db.session.rollback()
    if deferred:
        return
    reason = f"attempt {number} was lost: its work horse {what}"
    recorded, sends = record_lost(db.session, attempt_id, reason)
    db.session.remove()
    if recorded:
        log.warning("reaper: attempt %s lost: %s", attempt_id, reason)
        dispatcher_for(app).send(sends)


def _maintenance(app: Flask) -> None:
    reap_locked(app)


def install(app: Flask) -> None:
    """Hook the reaper into the worker and scheduler processes (``reg.on_ready``)."""
    hooks = runtime_hooks(app)
    for kind, callback in (("worker_start", _maintenance), ("maintenance", _maintenance),
                           ("horse_killed", on_horse_killed)):
        listed = getattr(hooks, kind)
        if callback not in listed:
            listed.append(callback)


@click.command("reap")
@click.option("--grace", type=float, default=GRACE_SECONDS, show_default=True,
              help="seconds an attempt must exist before its missing job counts")
@with_appcontext
def reap_command(grace: float) -> None:
    """One reaper pass: re-send work Redis lost, record attempts of dead workers lost."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    click.echo(str(reap_locked(app, grace=grace)))
