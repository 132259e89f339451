"""The record of a task's success on PostgreSQL in two round trips: the run's lock with
one read after it, and one write.

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

from sqlalchemy import ARRAY, String, bindparam, text

from app.extensions import DbSession
from capability.dsl import RunStatus, TaskStatus
from capability.engine import advance, outbox, prepared, runner, state
from capability.engine.state import AttemptContext, Outcome
from capability.engine.writes import Writes
from capability.models import AttemptStatus, Run, TaskAttempt, TaskKind, TaskRun

# The run's lock and the read after it, sent together (one round trip, two statements):
# PostgreSQL takes a statement's snapshot when the statement starts, so a single
# statement that had to wait for the lock would read the run's task rows as they were
# before the transaction it waited for (it reads again only the locked row); the second
# statement starts after the lock is held, and sees them as they are. It reads the run
# as ``advance_from`` and a begin read it, and on each row one of the tasks asked for
# (the attempt's and its downstream ones, as ``advance._Columns``, by the run's unique
# index on (run, task, kind)), with the attempt's state on the attempt's own task. Both
# prepared on each connection (``engine.prepared``).
_LOCK = prepared.Statement("apg_success_lock", text(
    f"SELECT 1 FROM {Run.__tablename__} WHERE id = :run_id FOR UPDATE"))
_READ = prepared.Statement("apg_success_read", text(
    "SELECT r.id, r.status, r.version_id, r.params, r.trigger, r.team_id, r.scheduled_for,"
    " t.id AS row, t.task_id, t.status AS task_status, t.attempts, t.current_attempt_id,"
    " a.status AS attempt_status"
    f" FROM {Run.__tablename__} r"
    f" LEFT JOIN {TaskRun.__tablename__} t ON t.run_id = r.id AND t.kind = :kind"
    " AND t.task_id = ANY(:task_ids)"
    f" LEFT JOIN {TaskAttempt.__tablename__} a ON a.task_run_id = t.id AND a.id = :attempt_id"
    " WHERE r.id = :run_id"
).bindparams(bindparam("run_id", type_=String()), bindparam("kind", type_=String()),
             bindparam("attempt_id", type_=String()),
             bindparam("task_ids", type_=ARRAY(String()))))


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
    attempt_id, task_id = ctx.attempt_id, ctx.task.id
    # The context's definition is the run's version's (a run never changes version).
    plan = state.plan_of(ctx.definition)
    others = plan.downstream[task_id]
    if len(others) > runner.PREFETCH_DOWNSTREAM:
        others = ()  # a fan-out: advance_from reads them as columns
    conn = session.connection()
    rows = prepared.execute(conn, (_LOCK, {"run_id": ctx.run_id}), (_READ, {
        "run_id": ctx.run_id, "attempt_id": attempt_id, "kind": TaskKind.TASK.value,
        "task_ids": [task_id, *others]})).all()
    if not rows:
        return False
    # The run's columns, on every row (``advance_from`` and ``Writes.run`` read them).
    run = prepared.times(rows[0], "scheduled_for")
    if run.status != RunStatus.RUNNING:
        return runner.complete_attempt(session, attempt_id, outcome)
    own = next((row for row in rows if row.task_id == task_id), None)
    if own is None or own.attempt_status != AttemptStatus.RUNNING \
            or own.current_attempt_id != attempt_id:
        return False  # a late or duplicate result: the first one counted
    box = outbox.of(session)
    box.touch(run.id)
    box.writes = Writes(run=run)
    box.writes.succeed(attempt_id, own.row, state.now(), outcome.output, outcome.log)
    downstream = [advance.columns(row.row, row.task_id, row.task_status, row.attempts)
                  for row in rows if row.task_id is not None and row.task_id != task_id]
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

