"""Run state in the database: start a run, begin and complete attempts (what follows a
completion is decided in ``advance.py``).

Every step is one transaction that locks the run row (PostgreSQL ``FOR UPDATE``;
SQLite serialises writers), so two workers finishing the two sides of a diamond at the
same time still decide the join exactly once. What a step makes ready is returned as
``Send`` items; the caller enqueues them only after the commit.

The hot path (``begin_attempt``, ``complete_attempt``) reads little: the lock's
statement, one statement for the attempt, its task and (on completion) the downstream
rows, the tasks an expression names (``scope_for``), and the definition from a cache by
version id (``plan_for``); new attempts get their ids here, so the writes go in at
commit.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.orm import lazyload

from app.ids import new_id
from capability import dsl
from capability.dsl import RunStatus, TaskStatus
from capability.engine import advance as advancing
from capability.engine import compensation, foreach, masking
from capability.engine.decide import Plan, plan_of
from capability.engine.dispatch import Send
from capability.models import Run, TaskAttempt, TaskItem, TaskRun, WorkflowVersion

FINISHED_RUN = {s.value for s in dsl.FINISHED_RUN_STATUSES}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@lru_cache(maxsize=256)
def _definition(version_id: str, frozen: str) -> dsl.WorkflowDefinition:
    import json

    result = dsl.validate_definition(json.loads(frozen))
    if result.definition is None:  # saved definitions were valid when saved
        raise ValueError(f"version {version_id} no longer validates: {result.errors}")
    return result.definition


def definition_of(version: WorkflowVersion) -> dsl.WorkflowDefinition:
    import json

    # Versions are immutable, so the parsed definition is cached by version id.
    return _definition(version.id, json.dumps(version.definition, sort_keys=True))


_BY_VERSION: OrderedDict[str, dsl.WorkflowDefinition] = OrderedDict()
_BY_VERSION_LOCK = threading.Lock()


def plan_for(session: Any, run: Run) -> Plan:
    """The plan of the run's version. The hot path of every attempt: no statement at all
    once this process has seen the version (versions never change after they are saved),
    where ``definition_of(run.version)`` reads and serialises its JSON each time."""
    return plan_for_version(session, run.version_id)


def plan_for_version(session: Any, version_id: str) -> Plan:
    with _BY_VERSION_LOCK:
        definition = _BY_VERSION.get(version_id)
        if definition is not None:
            _BY_VERSION.move_to_end(version_id)
    if definition is None:
        definition = definition_of(session.get(WorkflowVersion, version_id))
        with _BY_VERSION_LOCK:
            _BY_VERSION[version_id] = definition
            while len(_BY_VERSION) > 256:
                _BY_VERSION.popitem(last=False)
    return plan_of(definition)


@dataclass
class Outcome:
    """What an attempt produced."""

    ok: bool
    output: Any = None
    error: str | None = None
    retriable: bool = True
    defer: float | None = None  # a `delay` task: finish after this many seconds
    await_approval: bool = False  # an `approval` task: wait for a person
    start_child: dict[str, Any] | None = None  # a `workflow` task: the rendered `with`

    @classmethod
    def success(cls, output: Any = None) -> Outcome:
        return cls(True, output=output)

    @classmethod
    def failure(cls, error: str, retriable: bool = True) -> Outcome:
        return cls(False, error=error, retriable=retriable)


@dataclass
class AttemptContext:
    attempt_id: str
    number: int
    run_id: str
    task: dsl.TaskSpec
    definition: dsl.WorkflowDefinition
    scope: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None


def lock_run(session: Any, run_id: str) -> Run:
    # No joined eager loads here: PostgreSQL refuses FOR UPDATE across an outer join.
    # populate_existing: a run read earlier in the transaction gets the locked row's values.
    stmt = (select(Run).options(lazyload("*")).where(Run.id == run_id).with_for_update(of=Run)
            .execution_options(populate_existing=True))
    return session.execute(stmt).scalar_one()


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
    and_(TaskRun.run_id == bindparam("run_id"), TaskRun.kind == "task",
         TaskRun.task_id.in_(bindparam("others", expanding=True))),
))
_SCOPE = select(TaskRun.task_id, TaskRun.output, TaskRun.status, TaskRun.error).where(
    TaskRun.run_id == bindparam("run_id"), TaskRun.kind == "task").order_by(TaskRun.position)
_SCOPE_OF = _SCOPE.where(TaskRun.task_id.in_(bindparam("task_ids", expanding=True)))


# Downstream rows read with the lock's second statement, at most: a chain's next task or
# a small fan-out; a larger one is left to advance_from.
PREFETCH_DOWNSTREAM = 16


def _lock_attempt(session: Any, attempt_id: str) -> _Locked | None:
    """Lock the run of an attempt; then read the attempt, its task and element, and the
    rows of the task's downstream tasks (what its end may decide), in one statement.

    The lock's statement also reads which task and element the attempt belongs to:
    those never change, so they may come from before the lock was granted; everything
    else is read after it, so it is what the last holder committed."""
    found = session.execute(_LOCK_ATTEMPT, {"attempt_id": attempt_id}).first()
    if found is None:
        return None
    run, task_run_id, task_id, kind, item_id = found
    others: tuple[str, ...] = ()
    # Not for an element (its end rarely ends its task), nor on SQLite: there nothing is
    # locked until the first write, so advance_from reads them after it instead.
    if kind == "task" and item_id is None and session.get_bind().dialect.name != "sqlite":
        others = plan_for(session, run).downstream.get(task_id, ())
        if len(others) > PREFETCH_DOWNSTREAM:
            others = ()  # a fan-out: advance_from reads them as columns (no ORM objects)
    values = {"attempt_id": attempt_id, "task_run_id": task_run_id}
    if others:
        rows = session.execute(_OWN_AND_DOWNSTREAM,
                               {**values, "run_id": run.id, "others": list(others)}).all()
    else:
        rows = session.execute(_OWN, values).all()
    task, attempt, item = next(row for row in rows if row[0].id == task_run_id)
    return _Locked(run, attempt, task, item, [row[0] for row in rows if row[0].id != task_run_id])


def task_scope(run: Run) -> dict[str, Any]:
    """What expressions see: params, every task's output/status/error, the run."""
    # An undo step never hides its task.
    return _scope(run, ((t.task_id, t.output, t.status, t.error)
                        for t in run.tasks if t.kind == "task"))


def scope_for(session: Any, run: Any, reads: frozenset[str] | None,
              secrets: frozenset[str] | None = frozenset()) -> dict[str, Any]:
    """``task_scope`` with only the tasks an expression reads (``Plan.reads``; ``None``:
    all of them), read in one statement, none when it reads no task; and the run's
    team's secrets it reads (``Plan.secrets``), decrypted, none when it reads none.
    ``run``: a ``Run``, or any row with its ``id``, ``team_id``, ``params`` and
    ``trigger``."""
    rows: Any = ()
    if reads is None:
        rows = session.execute(_SCOPE, {"run_id": run.id}).all()
    elif reads:
        rows = session.execute(_SCOPE_OF, {"run_id": run.id, "task_ids": sorted(reads)}).all()
    scope = _scope(run, rows)
    if secrets is None or secrets:
        scope["secrets"] = masking.secret_values(session, run.team_id, secrets)
    return scope


def _scope(run: Any, tasks: Iterable[Any]) -> dict[str, Any]:
    return {
        "params": run.params or {},
        "tasks": {task_id: {"output": output, "status": status, "error": error}
                  for task_id, output, status, error in tasks},
        "run": {"id": run.id, "trigger": run.trigger},
        "secrets": {},
    }


def new_attempt(session: Any, task: TaskRun, spec: dsl.TaskSpec,
                definition: dsl.WorkflowDefinition, status: str,
                delay: float = 0.0, item: TaskItem | None = None) -> Send:
    """The next attempt of a task, or of one for_each element (``item``).

    The id is made here, so nothing is flushed: the rows go in at the next flush, many
    attempts in one statement."""
    plan = plan_of(definition)
    own = plan.specs.get(spec.id) is spec
    queue = plan.queues[spec.id] if own else dsl.effective_queue(spec, definition.defaults)
    timeout = plan.timeouts[spec.id] if own else dsl.effective_timeout(spec, definition.defaults)
    owner: TaskRun | TaskItem = item if item is not None else task
    owner.attempts += 1
    if item is not None:
        task.attempts += 1  # the task's count is the total over its elements
    attempt = TaskAttempt(
        id=new_id(), task_run_id=task.id, item_id=item.id if item is not None else None,
        number=owner.attempts, status=status, queue=queue,
        not_before=now() + dt.timedelta(seconds=delay) if delay else None,
    )
    session.add(attempt)
    owner.current_attempt_id = attempt.id
    return Send(attempt.id, queue, delay=delay, timeout=timeout,
                instant=spec.type in INSTANT_TYPES)


# Types whose attempt runs in microseconds and touches nothing outside the database
# (no I/O, no user code): a worker begins, runs and records one in a single
# transaction, one lock and one commit instead of two (jobs.run_attempt). Such an
# attempt is never seen `running`; it goes from queued to its result.
INSTANT_TYPES = frozenset({"noop", "transform", "fail"})


def finish_task(task: TaskRun, status: TaskStatus, error: str | None = None) -> None:
    task.status = status.value
    task.finished_at = now()
    if error is not None:
        task.error = error


def advance(session: Any, run: Run, definition: dsl.WorkflowDefinition,
            admit: bool = False) -> list[Send]:
    """Decide every task that can be decided now (``advance.advance``)."""
    return advancing.advance(session, run, definition, admit)


def promote_queued(session: Any, workflow_id: str, limit: int | None) -> list[Send]:
    """Start the oldest runs that waited for a slot (``advance.promote_queued``)."""
    return advancing.promote_queued(session, workflow_id, limit)


# begin_attempt in SQL expressions, no ORM objects: the lock's statement (which also
# reads the run), one read of attempt, owner and element, one UPDATE each for the
# attempt and its owner (and the task of an element), and the commit.
_BEGIN_LOCK = (
    select(Run.id, Run.status, Run.version_id, Run.params, Run.trigger, Run.team_id,
           TaskRun.id.label("task_row"), TaskRun.task_id, TaskRun.kind)
    .join(TaskRun, TaskRun.run_id == Run.id)
    .join(TaskAttempt, TaskAttempt.task_run_id == TaskRun.id)
    # A share lock: begins of the same run (a fan-out) do not wait for each other, while
    # a control or a completion (FOR UPDATE) still waits for them and they for it.
    .where(TaskAttempt.id == bindparam("attempt_id")).with_for_update(of=Run, read=True)
)
# An instant attempt begins and completes in one transaction: it takes the lock the
# completion needs from the start (upgrading a share lock could deadlock two workers).
_BEGIN_LOCK_EXCLUSIVE = _BEGIN_LOCK.with_for_update(of=Run)
_BEGIN_READ = (
    select(TaskAttempt.status, TaskAttempt.number, TaskAttempt.not_before, TaskAttempt.item_id,
           TaskRun.status.label("task_status"), TaskRun.current_attempt_id.label("task_current"),
           TaskItem.current_attempt_id.label("item_current"), TaskItem.value, TaskItem.index)
    .join(TaskRun, TaskAttempt.task_run_id == TaskRun.id)
    .outerjoin(TaskItem, TaskItem.id == TaskAttempt.item_id)
    .where(TaskAttempt.id == bindparam("attempt_id"))
)
_AT = bindparam("at", type_=TaskAttempt.started_at.type)
_BEGIN_ATTEMPT = update(TaskAttempt).where(TaskAttempt.id == bindparam("attempt_id")).values(
    status="running", started_at=_AT, worker=bindparam("by"))
_BEGIN_TASK = update(TaskRun).where(TaskRun.id == bindparam("row")).values(
    status=TaskStatus.RUNNING.value, started_at=func.coalesce(TaskRun.started_at, _AT))
_BEGIN_ITEM = update(TaskItem).where(TaskItem.id == bindparam("item")).values(
    status=TaskStatus.RUNNING.value, started_at=func.coalesce(TaskItem.started_at, _AT))


def mark_running(conn: Any, attempt_id: str, task_row: str, at: dt.datetime,
                 worker: str | None, item_id: str | None = None) -> None:
    """The attempt, its task (and element) are running from ``at``."""
    conn.execute(_BEGIN_ATTEMPT, {"attempt_id": attempt_id, "at": at, "by": worker})
    conn.execute(_BEGIN_TASK, {"row": task_row, "at": at})
    if item_id:
        conn.execute(_BEGIN_ITEM, {"item": item_id, "at": at})


def begin_attempt(session: Any, attempt_id: str, worker: str | None,
                  max_early: float = 0.0, instant: bool = False) -> AttemptContext | None:
    """Mark the attempt running; None when it must not run (stale, duplicate, run over).

    ``max_early``: a job that arrives before its attempt's ``not_before`` (RQ's scheduler
    works in whole seconds) waits out the rest, up to this long, before it begins.
    ``instant``: lock the run exclusively and do not commit: the caller completes the
    attempt in the same transaction (``INSTANT_TYPES``)."""
    if session.new or session.dirty or session.deleted:
        session.flush()  # what autoflush would do before an ORM query
    conn = session.connection()
    run = conn.execute(_BEGIN_LOCK_EXCLUSIVE if instant else _BEGIN_LOCK,
                       {"attempt_id": attempt_id}).first()
    if run is not None and run.status == RunStatus.QUEUED and not instant:
        # The run's first begin writes the run: that takes its lock exclusively, from the
        # start (two begins upgrading share locks would deadlock).
        session.rollback()
        conn = session.connection()
        run = conn.execute(_BEGIN_LOCK_EXCLUSIVE, {"attempt_id": attempt_id}).first()
    row = conn.execute(_BEGIN_READ, {"attempt_id": attempt_id}).first() if run else None
    if run is None or row is None or (
        row.status not in ("queued", "scheduled")
        or (row.item_current if row.item_id else row.task_current) != attempt_id
        or run.status not in RUNNABLE
        or (row.item_id and row.task_status != TaskStatus.RUNNING)
    ):
        session.rollback()
        return None
    early = seconds_until(row.not_before) if max_early and row.not_before else 0.0
    if early > 0:
        session.rollback()  # no lock held while waiting
        time.sleep(min(early, max_early))
        return begin_attempt(session, attempt_id, worker, instant=instant)
    plan = plan_for_version(session, run.version_id)
    spec = plan.specs[run.task_id]
    if run.kind != "task":  # a compensation step: its spec is built from its task's
        spec = compensation.spec_for(plan.definition, session.get(TaskRun, run.task_row))
    at = now()
    if run.status == RunStatus.QUEUED:
        run_begins(conn, run.id, at)
    mark_running(conn, attempt_id, run.task_row, at, worker, row.item_id)
    scope = scope_for(session, run, plan.reads(spec, "with"), plan.secrets(spec, "with"))
    if row.item_id:
        scope["item"], scope["index"] = row.value, row.index
    context = AttemptContext(
        attempt_id, row.number, run.id, spec, plan.definition, scope,
        dsl.effective_timeout(spec, plan.definition.defaults),
    )
    if not instant:
        session.commit()
    return context


def complete_attempt(
    session: Any, attempt_id: str, outcome: Outcome, commit: bool = True
) -> list[Send]:
    """Record an attempt's result exactly once and advance the run."""
    loaded = _lock_attempt(session, attempt_id)
    if loaded is None:
        return []
    run, attempt, task = loaded.run, loaded.attempt, loaded.task
    owner: TaskRun | TaskItem | None = loaded.item if attempt.item_id else task
    if owner is None or attempt.status != "running" or owner.current_attempt_id != attempt.id:
        session.rollback()  # a late or duplicate completion: the first one counted
        return []
    attempt.finished_at = now()
    if run.status not in (RunStatus.RUNNING, RunStatus.PAUSED):
        attempt.status = "cancelled"
        session.commit()
        return []
    plan = plan_for(session, run)
    definition = plan.definition
    spec = compensation.spec_for(definition, task)
    sends: list[Send] = []
    if isinstance(owner, TaskItem):
        sends += foreach.complete(session, run, task, owner, attempt, spec, definition, outcome)
    elif outcome.ok:
        attempt.status = "succeeded"
        task.output = outcome.output
        task.error = None
        finish_task(task, TaskStatus.SUCCEEDED)
    else:
        attempt.status = "failed"
        attempt.error = outcome.error
        task.error = outcome.error
        retry = dsl.effective_retry(spec, definition.defaults)
        if outcome.retriable and task.attempts - task.retry_base < retry.max_attempts:
            task.status = TaskStatus.RETRYING.value
            # Counted from the last manual retry, as the budget is: a fresh start.
            wait = retry.wait_seconds(task.attempts - task.retry_base)
            sends.append(new_attempt(session, task, spec, definition, "scheduled", wait))
        else:
            finish_task(task, TaskStatus.FAILED)
    if task.kind == compensation.KIND:
        sends += advance(session, run, definition)  # the next undo step, or the run's end
    elif task.status in dsl.FINISHED_TASK_STATUSES:
        sends += advancing.advance_from(session, run, plan, task, loaded.downstream)
    if commit:
        session.commit()
    return sends


def defer_attempt(session: Any, attempt_id: str, seconds: float) -> list[Send]:
    """A `delay` task: the attempt stays running while RQ's scheduled registry waits."""
    attempt = session.get(TaskAttempt, attempt_id)
    if attempt is None:
        return []
    attempt.not_before = now() + dt.timedelta(seconds=seconds)
    session.commit()
    return [Send(attempt.id, attempt.queue, delay=seconds, finish_delay=True)]


def await_approval(session: Any, attempt_id: str) -> None:
    """An `approval` task: the attempt waits for approve/reject; no worker is held."""
    attempt = session.get(TaskAttempt, attempt_id)
    if attempt is None or attempt.status != "running":
        session.rollback()
        return
    attempt.status = "waiting"
    attempt.task_run.status = TaskStatus.WAITING_APPROVAL.value
    session.commit()


def seconds_early(session: Any, attempt_id: str) -> tuple[str | None, float]:
    """The attempt's run id, and how long before its ``not_before`` its job arrived (0
    when on time), in one statement; ``(None, 0.0)`` for an unknown attempt.

    RQ's scheduler works in whole seconds, so a delayed job can come up to a second
    early; the job waits out the rest so a wait is never shorter than asked."""
    row = session.execute(
        select(TaskRun.run_id, TaskAttempt.not_before)
        .join(TaskRun, TaskAttempt.task_run_id == TaskRun.id).where(TaskAttempt.id == attempt_id)
    ).first()
    session.rollback()
    if row is None:
        return None, 0.0
    return row[0], seconds_until(row[1]) if row[1] is not None else 0.0


def seconds_until(when: dt.datetime) -> float:
    due = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return max(0.0, (due - now()).total_seconds())


def open_run(session: Any, run: Run, definition: dsl.WorkflowDefinition,
             start: bool) -> list[Send]:
    """Add a new run (not yet in the session) with a row per task; ``start``: running
    at once, its first ready tasks decided (else it waits in ``queued`` for a slot).

    The run is ``queued`` either way (the API's answer to a start): it becomes
    ``running`` when a worker begins its first task (``begin_attempt``,
    ``instant.run_attempt``). Ids are made here and the rows are written at the next
    flush, already in their first state: one INSERT for the run, one for its tasks and
    one for the first attempts, with nothing read back (the caller checked
    ``max_active_runs`` first)."""
    run.id = run.id or new_id()
    run.status = RunStatus.QUEUED.value
    # Every column the engine reads is set: column defaults apply only at the INSERT.
    run.tasks = [TaskRun(id=new_id(), task_id=task_id, kind="task", position=position,
                         status=TaskStatus.PENDING.value, attempts=0, retry_base=0)
                 for position, task_id in enumerate(dsl.topological_order(definition))]
    session.add(run)
    return advancing.advance(session, run, definition, admit=True) if start else []


def start(session: Any, run: Run) -> list[Send]:
    """A queued run that waited for a slot takes one: its first ready tasks are sent
    (and, for a retried run, the elements of its restarted for_each tasks)."""
    plan = plan_for(session, run)
    sends = advancing.advance(session, run, plan.definition, admit=True)
    for task in run.tasks:
        spec = plan.specs.get(task.task_id)
        if (task.kind == "task" and task.status == TaskStatus.RUNNING and spec is not None
                and spec.for_each is not None):
            sends += foreach.fill(session, task, spec, plan.definition)
    return sends


def active_runs(session: Any, workflow_id: str) -> int:
    """Runs holding a ``max_active_runs`` slot (``advance.active_runs``)."""
    return advancing.active_runs(session, workflow_id)


def admitted(session: Any, run_id: str) -> bool:
    """Whether a queued run holds its slot (``advance.admitted``)."""
    return advancing.admitted(session, run_id)


# The first attempt of a run to begin makes it running (it was queued since its start,
# or since a retry); its first start time is kept across retries.
_RUN_BEGINS = update(Run).where(Run.id == bindparam("run"),
                                Run.status == RunStatus.QUEUED.value).values(
    status=RunStatus.RUNNING.value,
    started_at=func.coalesce(Run.started_at, bindparam("at", type_=Run.started_at.type)))
RUNNABLE = (RunStatus.RUNNING, RunStatus.QUEUED)


def run_begins(conn: Any, run_id: str, at: dt.datetime) -> None:
    """A queued run's first attempt begins: the run is running from ``at``. The caller
    holds the run's lock exclusively."""
    conn.execute(_RUN_BEGINS, {"run": run_id, "at": at})
