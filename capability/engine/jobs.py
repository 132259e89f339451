"""What RQ workers execute: one task attempt, or the end of a `delay`.

Both run inside the Flask app context (``AppWorker``) and call the same runner
functions the web process uses.
"""

from __future__ import annotations

import time

from flask import current_app
from rq import get_current_job
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from app.extensions import db
from app.runtime import interrupt
from app.runtime.redis_conn import get_redis
from app.runtime.worker import serving
from capability import dsl, live
from capability.engine import masking, runner, subruns
from capability.engine.dispatch import JOB_PREFIX, Dispatcher, Send
from capability.engine.executors import EXECUTORS, Settings
from capability.engine.instant import run_attempt as run_instant
from capability.engine.runner import AttemptContext, Outcome
from capability.models import Run

# RQ's scheduler is whole-second; a job may wait at most this long for its due time.
MAX_EARLY_WAIT = 2.0

# Seconds a job may go on with the attempts its own made ready (see run_attempt), so a
# long chain does not keep other runs' jobs waiting for long.
FOLLOW_BUDGET = 0.5


def _dispatcher() -> Dispatcher:
    return Dispatcher(get_redis(current_app), current_app.config["TASK_DEFAULT_TIMEOUT"],
                      list(current_app.config["RQ_QUEUES"]))


def _settings() -> Settings:
    return Settings(list(current_app.config["PYTHON_TASK_PREFIXES"]))


def _worker_name() -> str | None:
    job = get_current_job()
    return getattr(job, "worker_name", None) if job is not None else None


def execute(ctx: AttemptContext, settings: Settings) -> Outcome:
    """Render the task's templates and run its type, inside its per-attempt timeout;
    every secret the task could read is masked in what comes back (``masking``)."""
    outcome = _execute(ctx, settings)
    if not masking.values(ctx.scope):
        return outcome
    outcome.output = masking.mask(outcome.output, ctx.scope)
    outcome.error = masking.text(outcome.error, ctx.scope)
    if outcome.start_child is not None:  # a child run's params are stored
        outcome.start_child = masking.mask(outcome.start_child, ctx.scope)
    return outcome


def _execute(ctx: AttemptContext, settings: Settings) -> Outcome:
    try:
        params = dsl.render(ctx.task.with_, ctx.scope, path="with")
    except dsl.ExpressionError as exc:
        return Outcome.failure(str(exc), retriable=False)
    executor = EXECUTORS.get(ctx.task.type)
    if executor is None:
        return Outcome.failure(f"type: {ctx.task.type!r} cannot run on this engine",
                               retriable=False)
    try:
        dsl.registry.get(ctx.task.type).validate_with(params, rendered=True)
    except Exception as exc:  # a template rendered to a value its type refuses
        return Outcome.failure(f"with: {exc}", retriable=False)
    # A task without a timeout of its own gets TASK_DEFAULT_TIMEOUT: an attempt that a job
    # went on with (run_attempt, follow-up) has no RQ alarm left to stop it.
    limit = ctx.timeout or float(current_app.config["TASK_DEFAULT_TIMEOUT"])
    try:
        # Only the task's own work can be stopped (cancel), never the engine's bookkeeping.
        with interrupt.interruptible(), UnixSignalDeathPenalty(
                int(max(1, limit)), JobTimeoutException):
            return executor(params, ctx, settings)
    except JobTimeoutException:
        return Outcome.failure(f"timed out after {limit:g}s (attempt {ctx.number})")
    except Exception as exc:  # the task failed; whether it is retried is the policy's call
        return Outcome.failure(f"{type(exc).__name__}: {exc}")


def _on_time(attempt_id: str) -> str | None:
    """Wait out an early arrival; the attempt's run id."""
    run_id, early = runner.seconds_early(db.session, attempt_id)
    if early > 0:
        time.sleep(min(early, MAX_EARLY_WAIT))
    return run_id


def _publish(run_id: str) -> None:
    """Tell the browsers watching the run, off this thread and coalesced (never raises)."""
    live.publish_run_soon(current_app._get_current_object(), run_id)  # type: ignore[attr-defined]


def run_attempt(attempt_id: str, instant: bool = False) -> None:
    """Run an attempt; then, while ``FOLLOW_BUDGET`` lasts, the next one it made ready.

    A task whose end makes the next task of its run ready (a chain: step after step)
    does not send that attempt through Redis when this worker serves its queue: the
    same job goes on with it. That saves the enqueue, the dequeue and RQ's bookkeeping
    of a job (about a third of a hop); the worker switches its identity to the
    attempt's job id first (``AppWorker.continue_as``), so cancel, the reaper and the
    watchdog see it as if it had been enqueued. Durability is unchanged: the attempt is
    committed ``queued`` before it runs, and if this process dies before it begins, the
    reaper sends it like any queued attempt whose job Redis does not have."""
    deadline = time.monotonic() + FOLLOW_BUDGET
    followed = False
    while True:
        try:
            sends, run_id = _run_one(attempt_id, instant)
        except interrupt.JobStopped:
            if not followed:
                raise  # RQ records its own job as stopped
            return  # a followed attempt was cancelled: nothing of RQ's to record
        follow = _follow(sends, deadline)
        _dispatcher().send([s for s in sends if s is not follow])
        if run_id is not None:
            _publish(run_id)
        if follow is None:
            return
        attempt_id, instant, followed = follow.attempt_id, follow.instant, True


def _follow(sends: list[Send], deadline: float) -> Send | None:
    """The attempt this job goes on with, if any (it is then taken out of ``sends``)."""
    worker = serving()
    if worker is None or time.monotonic() > deadline:
        return None
    names = set(worker.queue_names())
    for item in sends:
        if (item.delay <= 0 and not item.finish_delay and item.child_run is None
                and item.queue in names):
            if worker.continue_as(JOB_PREFIX + item.attempt_id,
                                  _dispatcher().job_timeout(item)):
                return item
            return None
    return None


def _run_one(attempt_id: str, instant: bool = False) -> tuple[list[Send], str | None]:
    """Begin, execute and record one attempt: (what to send, its run id). An instant
    one (``runner.INSTANT_TYPES``) in one transaction."""
    if instant:
        settings = _settings()
        handled = run_instant(db.session, attempt_id, _worker_name(),
                              lambda ctx: execute(ctx, settings))
        if handled is not None:
            db.session.remove()
            return handled
    # begin_attempt waits out an early arrival itself (no statement of its own for it).
    ctx = runner.begin_attempt(db.session, attempt_id, _worker_name(), MAX_EARLY_WAIT,
                               instant=instant)
    if ctx is None:
        db.session.remove()
        return [], None
    if not instant:
        _publish(ctx.run_id)
    outcome = execute(ctx, _settings())
    if outcome.start_child is not None:
        sends = subruns.start_child(db.session, attempt_id, outcome.start_child,
                                    list(current_app.config["RQ_QUEUES"]))
    elif outcome.await_approval:
        runner.await_approval(db.session, attempt_id)
        sends = []
    elif outcome.defer is not None:
        sends = runner.defer_attempt(db.session, attempt_id, outcome.defer)
    else:
        sends = runner.complete_attempt(db.session, attempt_id, outcome)
    db.session.remove()
    return sends, ctx.run_id


def child_finished(child_run_id: str) -> None:
    child = db.session.get(Run, child_run_id)
    parent_id = child.parent_run_id if child is not None else None  # read before the commit
    sends = subruns.child_finished(db.session, child_run_id)
    db.session.remove()
    _dispatcher().send(sends)
    if parent_id:
        _publish(parent_id)


def finish_delay(attempt_id: str) -> None:
    run_id = _on_time(attempt_id)
    sends = runner.complete_attempt(db.session, attempt_id, Outcome.success(None))
    db.session.remove()
    _dispatcher().send(sends)
    if run_id is not None:
        _publish(run_id)


