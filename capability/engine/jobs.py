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
from capability import dsl, live
from capability.engine import runner, subruns
from capability.engine.dispatch import Dispatcher
from capability.engine.executors import EXECUTORS, Settings
from capability.engine.runner import AttemptContext, Outcome
from capability.models import Run

# RQ's scheduler is whole-second; a job may wait at most this long for its due time.
MAX_EARLY_WAIT = 2.0


def _dispatcher() -> Dispatcher:
    return Dispatcher(get_redis(current_app), current_app.config["TASK_DEFAULT_TIMEOUT"],
                      list(current_app.config["RQ_QUEUES"]))


def _settings() -> Settings:
    return Settings(list(current_app.config["PYTHON_TASK_PREFIXES"]))


def _worker_name() -> str | None:
    job = get_current_job()
    return getattr(job, "worker_name", None) if job is not None else None


def execute(ctx: AttemptContext, settings: Settings) -> Outcome:
    """Render the task's templates and run its type, inside its per-attempt timeout."""
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
    try:
        # Only the task's own work can be stopped (cancel), never the engine's bookkeeping.
        with interrupt.interruptible():
            if ctx.timeout:
                with UnixSignalDeathPenalty(int(max(1, ctx.timeout)), JobTimeoutException):
                    return executor(params, ctx, settings)
            return executor(params, ctx, settings)
    except JobTimeoutException:
        limit = ctx.timeout or current_app.config["TASK_DEFAULT_TIMEOUT"]
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


def run_attempt(attempt_id: str) -> None:
    # begin_attempt waits out an early arrival itself (no statement of its own for it).
    ctx = runner.begin_attempt(db.session, attempt_id, _worker_name(), MAX_EARLY_WAIT)
    if ctx is None:
        db.session.remove()
        return
    _publish(ctx.run_id)
    outcome = execute(ctx, _settings())
    if outcome.start_child is not None:
        sends = subruns.start_child(db.session, attempt_id, outcome.start_child)
    elif outcome.await_approval:
        runner.await_approval(db.session, attempt_id)
        sends = []
    elif outcome.defer is not None:
        sends = runner.defer_attempt(db.session, attempt_id, outcome.defer)
    else:
        sends = runner.complete_attempt(db.session, attempt_id, outcome)
    db.session.remove()
    _dispatcher().send(sends)
    _publish(ctx.run_id)


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


