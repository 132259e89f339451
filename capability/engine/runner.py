"""The engine's transaction steps: start a run, begin an attempt, record its result
(what follows a completion is decided in ``advance``), defer a ``delay``, wait for an
approval.

Each step is one transaction that locks the run row (PostgreSQL ``FOR UPDATE``; SQLite
serialises writers), so two workers finishing the two sides of a diamond at the same
time still decide the join exactly once. No step commits or rolls back: its owner does
(``jobs``, a service), and what it made ready goes out after the commit (``outbox``).

The hot path (``begin_attempt``, ``complete_attempt``) reads little: the lock's
statement, one statement for the attempt, its task and (on completion) the downstream
rows, the tasks an expression names (``state.scope_for``), and the definition from a
cache by version id (``state.plan_for``); new attempts get their ids here, so the writes
go in at commit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, insert, or_, select, text
from sqlalchemy.orm import lazyload
from sqlalchemy.orm.util import identity_key

from app.extensions import DbSession
from app.ids import new_id, new_ids
from capability import dsl
from capability.dsl import RunStatus, TaskStatus
from capability.engine import advance, compensation, foreach, outbox, prepared, state
from capability.engine.decide import Plan, plan_of
from capability.engine.dispatch import Send
from capability.engine.state import AttemptContext, Outcome
from capability.models import AttemptStatus, Run, TaskAttempt, TaskItem, TaskKind, TaskRun

__all__ = ["Again", "AttemptContext", "Outcome", "await_approval", "await_input",
           "begin_attempt",
           "complete_attempt", "defer_attempt", "open_run", "record_expansion",
           "seconds_early"]


@dataclass
class _Locked:
    run: Run
    attempt: TaskAttempt
    task: TaskRun
    item: TaskItem | None
    downstream: list[TaskRun]  # the rows of the task's downstream tasks


# The statements of every hop, built once (building a statement costs about as much
# Python as running it); the values go in as bound parameters. complete_attempt reads
# ORM objects (advance works on them); begin_attempt, below, plain rows.
_LOCK_ATTEMPT = (
    select(Run, TaskRun.id, TaskRun.task_id, TaskRun.kind, TaskAttempt.item_id)
    .join(TaskRun, TaskRun.run_id == Run.id)
    .join(TaskAttempt, TaskAttempt.task_run_id == TaskRun.id)
    .where(TaskAttempt.id == bindparam("attempt_id")).options(lazyload("*"))
    .with_for_update(of=Run).execution_options(populate_existing=True)
)
_OWN_ROWS = (
    select(TaskRun, TaskAttempt, TaskItem)
    .outerjoin(TaskAttempt, and_(TaskAttempt.task_run_id == TaskRun.id,
                                 TaskAttempt.id == bindparam("attempt_id")))
    .outerjoin(TaskItem, TaskItem.id == TaskAttempt.item_id)
    .execution_options(populate_existing=True)
)
_OWN = _OWN_ROWS.where(TaskRun.id == bindparam("task_run_id"))
_OWN_AND_DOWNSTREAM = _OWN_ROWS.where(or_(
    TaskRun.id == bindparam("task_run_id"),
    and_(TaskRun.run_id == bindparam("run_id"), TaskRun.kind == TaskKind.TASK,
         TaskRun.task_id.in_(bindparam("others", expanding=True))),
))


# Downstream rows read with the lock's second statement, at most: a chain's next task or
# a small fan-out; a larger one is left to advance_from.
PREFETCH_DOWNSTREAM = 16


def _lock_attempt(session: DbSession, attempt_id: str) -> _Locked | None:
    """Lock the run of an attempt; then read the attempt, its task and element, and the
    rows of the task's downstream tasks (what its end may decide), in one statement.

    The lock's statement also reads which task and element the attempt belongs to:
    those never change, so they may come from before the lock was granted; everything
    else is read after it, so it is what the last holder committed."""
    found = session.execute(_LOCK_ATTEMPT, {"attempt_id": attempt_id}).first()
    if found is None:
        return None
    run, task_run_id, task_id, kind, item_id = found
    box = session.info.get(outbox.KEY)
    if box is not None:
        box.held[run.id] = run
    others: tuple[str, ...] = ()
    # Not for an element (its end rarely ends its task), nor on SQLite: there nothing is
    # locked until the first write, so advance_from reads them after it instead.
    if kind == TaskKind.TASK and item_id is None and session.get_bind().dialect.name != "sqlite":
        others = state.plan_for(session, run).downstream.get(task_id, ())
        if len(others) > PREFETCH_DOWNSTREAM:
            others = ()  # a fan-out: advance_from reads them as columns (no ORM objects)
    values = {"attempt_id": attempt_id, "task_run_id": task_run_id}
    if others:
        rows = session.execute(_OWN_AND_DOWNSTREAM,
                               {**values, "run_id": run.id, "others": list(others)}).all()
    else:
        rows = session.execute(_OWN, values).all()
    task, attempt, item = next(row for row in rows if row[0].id == task_run_id)  # type: ignore[misc]
    return _Locked(run, attempt, task, item, [row[0] for row in rows if row[0].id != task_run_id])


def open_run(session: DbSession, run: Run, definition: dsl.WorkflowDefinition,
             start: bool) -> None:
    """Add a new run (not yet in the session) with a row per task; ``start``: running
    at once, its first ready tasks decided (else it waits in ``queued`` for a slot).

    The run is ``queued`` either way (the API's answer to a start): it becomes
    ``running`` when a worker begins its first task (``begin_attempt``,
    ``instant.run_attempt``). Ids are made here and the rows are written already in
    their first state, with nothing read back (the caller checked ``max_active_runs``
    first): the run, its first tasks (those without upstreams, decided now) and their
    attempts through the ORM, then every other task row in one multi-row INSERT. Only a
    first task can be decided at a start (every other one waits for an unfinished
    upstream), so a 1,000-task DAG makes one ORM object per root, not per task (~0.3 ms
    each, most of its start); when a first task finishes at once (a failure decided
    at the start), the whole run is decided again over every row."""
    open_runs(session, [(run, definition, start)])


def open_runs(session: DbSession,
              runs: list[tuple[Run, dsl.WorkflowDefinition, bool]]) -> None:
    """``open_run`` for many runs in one flush and one INSERT of their other task rows:
    a scheduler starting the runs of a thousand due schedules pays per statement, not
    per run (``triggers.ticker``)."""
    others: list[dict[str, Any]] = []
    decided: list[tuple[Run, dsl.WorkflowDefinition, list[TaskRun]]] = []
    for run, definition, start in runs:
        run.id = run.id or new_id()
        run.status = RunStatus.QUEUED.value
        plan = plan_of(definition)
        first: list[TaskRun] = []
        ids = new_ids(len(plan.position))
        for (task_id, position), row_id in zip(plan.position.items(), ids, strict=True):
            # Every column the engine reads is set: column defaults apply only at the
            # INSERT. The plan's positions are the topological order, in that order.
            row = {"id": row_id, "run_id": run.id, "task_id": task_id,
                   "kind": TaskKind.TASK, "position": position,
                   "status": TaskStatus.PENDING.value, "attempts": 0, "retry_base": 0}
            if start and not plan.upstream[task_id]:
                first.append(TaskRun(**row))
            else:
                others.append(row)
        run.tasks = first
        session.add(run)
        state.log_started(session, run, definition.name)
        if start:
            advance.decide_first(session, run, plan, first)
        decided.append((run, definition, first))
    session.flush()  # the runs before their task rows
    if others:
        _insert_tasks(session, others)
    for run, definition, first in decided:
        # The collection holds the first tasks only: it is read again, whole, when asked.
        session.expire(run, ["tasks"])
        if any(t.status in dsl.FINISHED_TASK_STATUSES for t in first):
            advance.advance(session, run, definition, admit=True)


_INSERT_TASKS = insert(TaskRun)
# On PostgreSQL the rows are made by the server from arrays: an executemany of 1,000
# rows spent ~8 ms in Python on 8,000 bound parameters (SQLAlchemy's insertmanyvalues),
# for a statement whose server time is mostly the foreign-key checks.
_UNNEST_TASKS = text(
    f"INSERT INTO {TaskRun.__tablename__} (id, run_id, task_id, kind, position, status, "
    "attempts, retry_base) SELECT t.id, t.run_id, t.task_id, :kind, t.position, :status, 0, 0 "
    "FROM unnest(CAST(:ids AS varchar[]), CAST(:run_ids AS varchar[]), "
    "CAST(:task_ids AS varchar[]), CAST(:positions AS integer[])) "
    "AS t(id, run_id, task_id, position)")


def _insert_tasks(session: DbSession, rows: list[dict[str, Any]]) -> None:
    """Pending task rows of new runs (``open_runs``), in one statement."""
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        conn.execute(_INSERT_TASKS, rows)
        return
    conn.execute(_UNNEST_TASKS, {
        "kind": TaskKind.TASK.value, "status": TaskStatus.PENDING.value,
        "ids": [r["id"] for r in rows], "run_ids": [r["run_id"] for r in rows],
        "task_ids": [r["task_id"] for r in rows], "positions": [r["position"] for r in rows]})


class Again(NamedTuple):
    """``begin_attempt`` cannot begin in this transaction: the owner rolls back, then
    waits ``wait`` seconds (the job came before its attempt's ``not_before``) or asks
    again with ``exclusive`` (the run's first begin writes the run)."""

    wait: float = 0.0
    exclusive: bool = False


# begin_attempt in SQL expressions, no ORM objects: the run's lock, then one read of the
# run, the attempt, its owner and element (two statements, so the read starts after the
# lock is held and sees what its holder wrote; one round trip on PostgreSQL, both
# prepared: ``engine.prepared``), one write of the attempt and its owner (and the task
# of an element), and the commit.
_BEGIN_JOIN = (TaskAttempt.__table__.join(TaskRun, TaskAttempt.task_run_id == TaskRun.id)
               .join(Run, TaskRun.run_id == Run.id))
_BEGIN_LOCK = prepared.Statement("apg_begin_lock", (
    select(Run.id).select_from(_BEGIN_JOIN)
    # A share lock: begins of the same run (a fan-out) do not wait for each other, while
    # a control or a completion (FOR UPDATE) still waits for them and they for it.
    .where(TaskAttempt.id == bindparam("attempt_id")).with_for_update(of=Run, read=True)))
# An instant attempt begins and completes in one transaction: it takes the lock the
# completion needs from the start (upgrading a share lock could deadlock two workers).
_BEGIN_LOCK_EXCLUSIVE = prepared.Statement(
    "apg_begin_lock_exclusive", _BEGIN_LOCK.statement.with_for_update(of=Run))
_BEGIN_READ = prepared.Statement("apg_begin_read", (
    select(Run.id, Run.status, Run.version_id, Run.params, Run.trigger, Run.team_id,
           Run.scheduled_for, TaskRun.id.label("task_row"), TaskRun.task_id, TaskRun.kind,
           TaskAttempt.status.label("attempt_status"), TaskAttempt.number,
           TaskAttempt.not_before, TaskAttempt.item_id, TaskAttempt.worker,
           TaskRun.status.label("task_status"), TaskRun.current_attempt_id.label("task_current"),
           TaskItem.current_attempt_id.label("item_current"), TaskItem.value, TaskItem.index)
    .select_from(_BEGIN_JOIN.outerjoin(TaskItem, TaskItem.id == TaskAttempt.item_id))
    .where(TaskAttempt.id == bindparam("attempt_id"))))


def begin_attempt(session: DbSession, attempt_id: str, worker: str | None,
                  exclusive: bool = False, early: bool = False, again: bool = False
                  ) -> AttemptContext | Again | None:
    """Mark the attempt running: its context, or None when it must not run (stale,
    duplicate, run over, paused), or ``Again``. The attempt that makes a for_each
    task's elements begins the same way (its context ``expands``, with no scope: what
    its expressions read is read after this commit, ``foreach.evaluate``).

    ``exclusive``: lock the run exclusively (an instant attempt, completed in the same
    transaction, or a queued run's first begin). ``early``: a job that arrives before
    its attempt's ``not_before`` (RQ's scheduler works in whole seconds) is told to
    wait out the rest (``Again.wait``). ``again``: this job's earlier begin failed on
    its connection, perhaps after its commit landed: an attempt already ``running`` on
    this very ``worker`` is that begin's, and goes on (``jobs.retried``)."""
    outbox.flush(session)  # what autoflush would do before an ORM query, and more
    conn = session.connection()
    given = {"attempt_id": attempt_id}
    found = prepared.execute(conn, (_BEGIN_LOCK_EXCLUSIVE if exclusive else _BEGIN_LOCK, given),
                             (_BEGIN_READ, given)).first()
    if found is None:
        return None
    row = run = prepared.times(found, "scheduled_for", "not_before")
    if run.status == RunStatus.QUEUED and not exclusive:
        # The run's first begin writes the run: that takes its lock exclusively, from the
        # start (two begins upgrading share locks would deadlock).
        return Again(exclusive=True)
    # A worker runs one job at a time, so an attempt running under its name while it
    # begins that attempt again was begun by the try whose answer was lost.
    ours = again and worker is not None and row.worker == worker
    if ((row.attempt_status not in (AttemptStatus.QUEUED, AttemptStatus.SCHEDULED)
         and not (ours and row.attempt_status == AttemptStatus.RUNNING))
            or (row.item_current if row.item_id else row.task_current) != attempt_id
            or run.status not in state.RUNNABLE
            or (row.item_id and row.task_status != TaskStatus.RUNNING)):
        return None
    if early and row.not_before is not None:
        wait = state.seconds_until(row.not_before)
        if wait > 0:
            return Again(wait=wait)
    plan = state.plan_for_version(session, run.version_id)
    spec = plan.specs[run.task_id]
    if run.kind != TaskKind.TASK:  # a compensation step: its spec is built from its task's
        step = session.get(TaskRun, run.task_row)
        assert step is not None
        spec = compensation.spec_for(plan.definition, step)
    # The attempt that makes a for_each task's elements (``foreach.start``).
    expands = spec.for_each is not None and not row.item_id
    at = state.now()
    if run.status == RunStatus.QUEUED:
        state.run_begins(conn, run.id, at)
    state.mark_running(conn, attempt_id, run.task_row, at, worker, row.item_id)
    item = (row.value, row.index) if row.item_id else None
    return context(session, run, plan, spec, attempt_id, row.number, expands, item,
                   plain=run.kind == TaskKind.TASK and not row.item_id)


def context(session: DbSession, run: Any, plan: Plan, spec: dsl.TaskSpec,
            attempt_id: str, number: int, expands: bool,
            item: tuple[Any, Any] | None = None, plain: bool = False) -> AttemptContext:
    """A begun attempt's context: what its expressions see (none for the attempt that
    makes a for_each task's elements: ``foreach.evaluate`` reads it after the commit)."""
    scope: dict[str, Any] = {}
    if not expands:
        scope = state.scope_for(session, run, plan.reads(spec, "with"),
                                plan.secrets(spec, "with"))
    if item is not None:
        scope["item"], scope["index"] = item
    outbox.of(session).touch(run.id)
    return AttemptContext(
        attempt_id, number, run.id, spec, plan.definition, scope,
        dsl.effective_timeout(spec, plan.definition.defaults), expands, team_id=run.team_id,
        plain=plain and not expands,
    )


def begin_made(session: DbSession, attempt_id: str, worker: str | None
               ) -> AttemptContext | None:
    """``begin_attempt`` for an attempt this very transaction made and has not written
    yet (``jobs.Onward``: the record of the task before it, under the run's exclusive
    lock): it is written ``running`` at once, with its task, so the begin costs no
    statement of its own (four otherwise: the lock, the read, two updates). None when it
    is not such an attempt (one made in bulk, an element's, an undo step's, the one that
    expands a for_each): ``begin_attempt`` then."""
    attempt = next((obj for obj in session.new
                    if isinstance(obj, TaskAttempt) and obj.id == attempt_id), None)
    if attempt is None or attempt.item_id is not None or attempt.status != AttemptStatus.QUEUED:
        return None
    task = session.identity_map.get(identity_key(TaskRun, attempt.task_run_id))
    if not isinstance(task, TaskRun) or task.kind != TaskKind.TASK \
            or task.current_attempt_id != attempt_id:
        return None
    run = outbox.of(session).held.get(task.run_id)
    if not isinstance(run, Run) or run.status != RunStatus.RUNNING:
        return None
    plan = state.plan_for_version(session, run.version_id)
    spec = plan.specs[task.task_id]
    if spec.for_each is not None:
        return None
    at = state.now()
    attempt.status, attempt.started_at, attempt.worker = AttemptStatus.RUNNING, at, worker
    task.status = TaskStatus.RUNNING.value
    task.started_at = task.started_at or at
    return context(session, run, plan, spec, attempt_id, attempt.number, expands=False,
                   plain=True)


def record_expansion(session: DbSession, attempt_id: str, made: foreach.Expansion) -> bool:
    """Store what a for_each task's expanding attempt evaluated (``foreach.evaluate``,
    outside any transaction) under the run's lock, once: its elements, or its skip or
    failure; then advance the run when the task finished. False when the attempt no
    longer runs (a cancel came while it evaluated, and wins; the owner rolls back).

    The attempt itself is dropped: a for_each task's attempts are its elements' tries,
    not this bookkeeping."""
    loaded = _lock_attempt(session, attempt_id)
    if loaded is None:
        return False
    run, attempt, task = loaded.run, loaded.attempt, loaded.task
    if attempt.status != AttemptStatus.RUNNING or task.current_attempt_id != attempt.id:
        return False
    outbox.of(session).touch(run.id)
    if run.status not in (RunStatus.RUNNING, RunStatus.PAUSED):
        attempt.status = AttemptStatus.CANCELLED
        attempt.finished_at = state.now()
        return True
    plan = state.plan_for(session, run)
    task.attempts -= 1
    task.current_attempt_id = None
    session.delete(attempt)
    foreach.expand(session, task, compensation.spec_for(plan.definition, task),
                   plan.definition, made)
    if task.status not in dsl.FINISHED_TASK_STATUSES:
        return True
    if task.kind == compensation.KIND:  # an empty list: the next undo step, or the end
        advance.advance(session, run, plan.definition)
    else:
        advance.advance_from(session, run, plan, task, loaded.downstream)
    return True


def _add_cost(run: Run, output: Any) -> None:
    """CONNECTORS.md: a run's ``cost`` is what its attempts' outputs say they cost."""
    cost = output.get("cost") if isinstance(output, dict) else None
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        run.cost = round((run.cost or 0.0) + float(cost), 8)


def complete_attempt(session: DbSession, attempt_id: str, outcome: Outcome) -> bool:
    """Record an attempt's result exactly once and advance the run. False when nothing
    was recorded (a late or duplicate completion: the first one counted; the owner
    rolls back)."""
    loaded = _lock_attempt(session, attempt_id)
    if loaded is None:
        return False
    run, attempt, task = loaded.run, loaded.attempt, loaded.task
    owner: TaskRun | TaskItem | None = loaded.item if attempt.item_id else task
    if (owner is None or attempt.status != AttemptStatus.RUNNING
            or owner.current_attempt_id != attempt.id):
        return False
    attempt.finished_at = state.now()
    if outcome.log is not None:  # in the attempt's UPDATE: no statement of its own
        attempt.log, attempt.log_truncated = outcome.log
    outbox.of(session).touch(run.id)
    _add_cost(run, outcome.output)
    if run.status not in (RunStatus.RUNNING, RunStatus.PAUSED):
        attempt.status = AttemptStatus.CANCELLED
        return True
    plan = state.plan_for(session, run)
    definition = plan.definition
    spec = compensation.spec_for(definition, task)
    if isinstance(owner, TaskItem):
        foreach.complete(session, run, task, owner, attempt, spec, definition, outcome)
    elif outcome.ok:
        attempt.status = AttemptStatus.SUCCEEDED
        task.output = outcome.output
        task.error = None
        state.finish_task(task, TaskStatus.SUCCEEDED)
    else:
        attempt.status = AttemptStatus.FAILED
        attempt.error = outcome.error
        task.error = outcome.error
        if state.after_failure(session, task, spec, definition, outcome):
            state.finish_task(task, TaskStatus.FAILED)
    if task.kind == compensation.KIND:
        advance.advance(session, run, definition)  # the next undo step, or the run's end
    elif task.status in dsl.FINISHED_TASK_STATUSES:
        advance.advance_from(session, run, plan, task, loaded.downstream)
    return True


def defer_attempt(session: DbSession, attempt_id: str, seconds: float) -> None:
    """A `delay` task: the attempt stays running while RQ's scheduled registry waits."""
    attempt = session.get(TaskAttempt, attempt_id)
    if attempt is None:
        return
    attempt.not_before = state.now() + dt.timedelta(seconds=seconds)
    outbox.of(session).send(Send(attempt.id, attempt.queue, delay=seconds, finish_delay=True))


def await_approval(session: DbSession, attempt_id: str, prompt: dict[str, Any]) -> bool:
    """An `approval` task: the attempt waits for approve/reject, no worker is held;
    ``prompt``: its rendered message and approvers, kept for the page and the answer.
    False when the attempt no longer runs (the owner rolls back)."""
    return _wait(session, attempt_id, prompt, TaskStatus.WAITING_APPROVAL)


def await_input(session: DbSession, attempt_id: str, prompt: dict[str, Any]) -> bool:
    """An `agent` task: the attempt waits for an agent's output (``engine.agents``), no
    worker is held; ``prompt``: its rendered instructions, inputs, output schema, model
    hint and checks. False when the attempt no longer runs (the owner rolls back)."""
    return _wait(session, attempt_id, prompt, TaskStatus.WAITING_INPUT)


def _wait(session: DbSession, attempt_id: str, prompt: dict[str, Any],
          status: TaskStatus) -> bool:
    attempt = session.get(TaskAttempt, attempt_id)
    if attempt is None or attempt.status != AttemptStatus.RUNNING:
        return False
    attempt.status = AttemptStatus.WAITING
    attempt.task_run.status = status.value
    attempt.task_run.prompt = prompt
    outbox.of(session).touch(attempt.task_run.run_id)
    return True


def seconds_early(session: DbSession, attempt_id: str) -> tuple[str | None, float]:
    """The attempt's run id, and how long before its ``not_before`` its job arrived (0
    when on time), in one statement; ``(None, 0.0)`` for an unknown attempt.

    RQ's scheduler works in whole seconds, so a delayed job can come up to a second
    early; the job waits out the rest so a wait is never shorter than asked."""
    row = session.execute(
        select(TaskRun.run_id, TaskAttempt.not_before)
        .join(TaskRun, TaskAttempt.task_run_id == TaskRun.id).where(TaskAttempt.id == attempt_id)
    ).first()
    if row is None:
        return None, 0.0
    return row[0], state.seconds_until(row[1]) if row[1] is not None else 0.0
