"""The attempt of an instant type (``state.INSTANT_TYPES``: noop, transform, fail):
lock, begin, run, record and advance in one transaction and a handful of statements.

Such a task touches nothing outside the database and runs in microseconds, so what it
costs is the engine's bookkeeping; in a 1,000-task fan-out that bookkeeping, not the
task, sets the pace. The general path (``runner.begin_attempt`` then
``runner.complete_attempt``) reads ORM objects twice and writes each row twice; here
the lock's statement reads the run, task and attempt as plain rows, a success writes
attempt and task once (one statement on PostgreSQL), and only downstream tasks that
may be decided are read as ORM objects (``advance.advance_from``; a join that still
waits is only probed).

What this path does not handle goes to the general one, in the same transaction or
after its owner rolled back: an element of a ``for_each``, an undo step, a job that came
before its attempt's ``not_before``, and a failure (retries and their backoff).
Nothing here commits: the job does (``jobs``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import bindparam, exists, select, text, update

from app.extensions import DbSession
from capability.dsl import RunStatus, TaskStatus
from capability.engine import advance, outbox, runner, state, writes
from capability.engine.state import AttemptContext, Outcome
from capability.models import OPEN_TASKS, AttemptStatus, Run, TaskAttempt, TaskKind, TaskRun


class Handled(NamedTuple):
    """An attempt this path took: ``ran`` (the owner commits) or not (stale, duplicate,
    its run paused or over: the owner rolls back); the run id when it ran."""

    ran: bool
    run_id: str | None = None


NOT_RUN = Handled(False)

# Plain rows, no ORM objects: the run as ``advance.advance_from`` reads it (a run's end
# loads the ORM object to write it), the task and the attempt.
_LOCK = (
    select(Run.id, Run.status, Run.version_id, Run.params, Run.trigger, Run.team_id,
           Run.scheduled_for,
           TaskRun.id.label("row"), TaskRun.task_id, TaskRun.kind,
           TaskRun.current_attempt_id.label("current"), TaskAttempt.status.label("attempt_status"),
           TaskAttempt.number, TaskAttempt.not_before, TaskAttempt.item_id)
    .join(TaskRun, TaskRun.run_id == Run.id)
    .join(TaskAttempt, TaskAttempt.task_run_id == TaskRun.id)
    .where(TaskAttempt.id == bindparam("attempt_id"))
    # Exclusive from the start: the completion needs it, and upgrading a share lock
    # could deadlock two workers.
    .with_for_update(of=Run)
)
_AT = bindparam("at", type_=TaskAttempt.started_at.type)
_SUCCEED_ATTEMPT = update(TaskAttempt).where(TaskAttempt.id == bindparam("attempt_id")).values(
    status=AttemptStatus.SUCCEEDED, started_at=_AT, finished_at=_AT, worker=bindparam("by"))
_SUCCEED_TASK = writes.SUCCEED_TASK
# PostgreSQL writes both rows in one statement (a data-modifying WITH; SQLite has none).
_SUCCEED_BOTH = _SUCCEED_TASK.add_cte(_SUCCEED_ATTEMPT.cte("succeeded_attempt"))
# A task nothing depends on (a leaf of a fan-out, the end of a chain) asks next whether
# its run is over: the same statement answers whether another task is unfinished. Its
# WITH writes are not visible to its own SELECT, hence ``id <> row``; the condition is
# the partial index's own (``ix_apg_task_run_open``), so the answer is one index probe.
_OTHER_OPEN = exists().where(
    TaskRun.run_id == bindparam("of_run"), TaskRun.kind == TaskKind.TASK, text(OPEN_TASKS),
    TaskRun.id != bindparam("row"))
_SUCCEED_LEAF = (select(_OTHER_OPEN)
                 .add_cte(_SUCCEED_ATTEMPT.cte("succeeded_attempt"))
                 .add_cte(_SUCCEED_TASK.cte("succeeded_task")))


@dataclass(frozen=True)
class _Running:
    """The run as ``advance.advance_from`` reads it, once its first attempt began."""

    id: str
    status: str
    params: Any
    trigger: str
    team_id: str


def run_attempt(session: DbSession, attempt_id: str, worker: str | None,
                execute: Callable[[AttemptContext], Outcome]) -> Handled | None:
    """Run an instant attempt; None when the general path must take it (nothing was
    written: the owner rolls back and begins it the general way)."""
    if session.new or session.dirty or session.deleted:
        session.flush()
    conn = session.connection()
    run = conn.execute(_LOCK, {"attempt_id": attempt_id}).first()
    if run is None:
        return NOT_RUN
    if run.item_id is not None or run.kind != TaskKind.TASK or (
            run.not_before is not None and state.seconds_until(run.not_before) > 0):
        return None
    if run.attempt_status not in (AttemptStatus.QUEUED, AttemptStatus.SCHEDULED) or (
            run.current != attempt_id or run.status not in state.RUNNABLE):
        return NOT_RUN  # stale or duplicate, or the run is paused or over
    plan = state.plan_for_version(session, run.version_id)
    spec = plan.specs[run.task_id]
    if state.evaluates(spec):
        return None  # never evaluated under the lock taken here: the general path
    if spec.for_each is not None:
        return None  # the attempt that makes its elements (``runner.begin_attempt``)
    scope = state.scope_for(session, run, plan.reads(spec, "with"), plan.secrets(spec, "with"))
    ctx = AttemptContext(attempt_id, run.number, run.id, spec, plan.definition, scope,
                         plan.timeouts[run.task_id], team_id=run.team_id)
    outcome = execute(ctx)
    at = state.now()
    current: Any = run
    if run.status == RunStatus.QUEUED:  # the run's first attempt to begin
        state.run_begins(conn, run.id, at)
        current = _Running(run.id, RunStatus.RUNNING.value, run.params, run.trigger,
                           run.team_id)
    outbox.of(session).touch(run.id)
    if not outcome.ok:
        # Begin as the general path does, then let it apply the retry decision.
        state.mark_running(conn, attempt_id, run.row, at, worker)
        runner.complete_attempt(session, attempt_id, outcome)
        return Handled(True, ctx.run_id)
    values = {"attempt_id": attempt_id, "row": run.row, "at": at, "by": worker,
              "out": outcome.output}
    if conn.dialect.name == "postgresql":
        if not plan.downstream[run.task_id]:
            if conn.execute(_SUCCEED_LEAF, {**values, "of_run": run.id}).scalar():
                return Handled(True, ctx.run_id)  # another task is unfinished: so is the run
        else:
            conn.execute(_SUCCEED_BOTH, values)
    else:
        conn.execute(_SUCCEED_ATTEMPT, values)
        conn.execute(_SUCCEED_TASK, values)
    advance.advance_from(session, current, plan,
                         advance.Finished(run.task_id, TaskStatus.SUCCEEDED.value))
    return Handled(True, ctx.run_id)
