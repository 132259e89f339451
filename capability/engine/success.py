"""The record of a task's success on PostgreSQL in three statements: the run's lock, one
read, one write.

``runner.complete_attempt`` records any outcome of any attempt: it reads the run, the
attempt and its task as ORM objects, and its unit of work writes four rows one by one
(the attempt and task that finished, the next task and its new attempt). Most records
are none of its special cases: a task's own attempt (not an element's, not an undo
step's) that succeeded, in a running run, costing nothing (``CONNECTORS.md``: an
output's ``cost``). For those, this module reads plain rows and holds the writes
(``engine.writes``) until the commit, where they go in one statement; the next task's
attempt, when the same job goes on with it (``jobs.Onward``), is begun in those held
rows (``begin_held``) and written ``running`` at once. What comes next is decided as
always, by ``advance.advance_from``; a run found not ``running`` after the lock (paused,
cancelled) goes to ``complete_attempt`` in the same transaction.
"""

from __future__ import annotations

from sqlalchemy import and_, bindparam, select

from app.extensions import DbSession
from capability.dsl import RunStatus, TaskStatus
from capability.engine import advance, outbox, runner, state
from capability.engine.state import AttemptContext, Outcome
from capability.engine.writes import Writes
from capability.models import AttemptStatus, Run, TaskAttempt, TaskKind, TaskRun

# The run as ``advance_from`` and a begin read it, as a plain row: its primary key alone,
# a statement PostgreSQL plans in no time (the attempt's run is known: ``ctx.run_id``).
_LOCK = (
    select(Run.id, Run.status, Run.version_id, Run.params, Run.trigger, Run.team_id,
           Run.scheduled_for)
    .where(Run.id == bindparam("run_id")).with_for_update()
)
# After the lock (PostgreSQL would read again only the locked row of a join whose lock
# had to wait): the task with the attempt's state, and the task's downstream rows (as
# ``advance._Columns``), by the run's unique index on (run, task, kind).
_ROWS = (
    select(TaskRun.id, TaskRun.task_id, TaskRun.status, TaskRun.attempts,
           TaskRun.current_attempt_id, TaskAttempt.status.label("attempt_status"))
    .outerjoin(TaskAttempt, and_(TaskAttempt.task_run_id == TaskRun.id,
                                 TaskAttempt.id == bindparam("attempt_id")))
    .where(TaskRun.run_id == bindparam("run_id"), TaskRun.kind == TaskKind.TASK,
           TaskRun.task_id.in_(bindparam("task_ids", expanding=True)))
)


def takes(session: DbSession, ctx: AttemptContext, outcome: Outcome) -> bool:
    """Whether ``record`` may record this outcome of this attempt."""
    cost = outcome.output.get("cost") if isinstance(outcome.output, dict) else None
    return (ctx.plain and outcome.ok and cost is None and outcome.skipped is None
            and outcome.start_child is None and not outcome.await_approval
            and not outcome.await_input and outcome.defer is None
            and session.get_bind().dialect.name == "postgresql")


def record(session: DbSession, ctx: AttemptContext, outcome: Outcome) -> bool:
    """Record a successful attempt (``takes``) exactly once and advance the run, as
    ``runner.complete_attempt`` does and with what it returns."""
    conn = session.connection()
    attempt_id, task_id = ctx.attempt_id, ctx.task.id
    run = conn.execute(_LOCK, {"run_id": ctx.run_id}).first()
    if run is None:
        return False
    if run.status != RunStatus.RUNNING:
        return runner.complete_attempt(session, attempt_id, outcome)
    plan = state.plan_for_version(session, run.version_id)
    others = plan.downstream[task_id]
    if len(others) > runner.PREFETCH_DOWNSTREAM:
        others = ()  # a fan-out: advance_from reads them as columns
    rows = conn.execute(_ROWS, {"attempt_id": attempt_id, "run_id": run.id,
                                "task_ids": [task_id, *others]}).all()
    own = next((row for row in rows if row.task_id == task_id), None)
    if own is None or own.attempt_status != AttemptStatus.RUNNING \
            or own.current_attempt_id != attempt_id:
        return False  # a late or duplicate result: the first one counted
    box = outbox.of(session)
    box.touch(run.id)
    box.writes = Writes(run=run)
    box.writes.succeed(attempt_id, own.id, state.now(), outcome.output, outcome.log)
    downstream = [advance.columns(row) for row in rows if row.task_id != task_id]
    advance.advance_from(session, run, plan,
                         advance.Finished(task_id, TaskStatus.SUCCEEDED.value), downstream)
    return True


def begin_held(session: DbSession, attempt_id: str, worker: str | None
               ) -> AttemptContext | None:
    """``runner.begin_made`` for an attempt queued in this transaction's held writes
    (``record``): written ``running`` with them. None when it is not one of them."""
    box = outbox.of(session)
    if box.writes is None:
        return None
    begun = box.writes.begin(attempt_id, state.now(), worker)
    if begun is None:
        return None
    task_id, number = begun
    run = box.writes.run
    plan = state.plan_for_version(session, run.version_id)
    spec = plan.specs[task_id]
    # Its expressions may read the task that just succeeded: ``state.scope_for`` writes
    # the held rows first.
    return runner.context(session, run, plan, spec, attempt_id, number, expands=False,
                          plain=True)

