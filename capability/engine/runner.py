"""Run state in the database: start a run, begin and complete attempts, advance.

Every step is one transaction that locks the run row (PostgreSQL ``FOR UPDATE``;
SQLite serialises writers), so two workers finishing the two sides of a diamond at the
same time still decide the join exactly once. What a step makes ready is returned as
``Send`` items; the caller enqueues them only after the commit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import lazyload

from capability import dsl
from capability.dsl import RunStatus, TaskStatus
from capability.engine import compensation, items
from capability.engine.decide import Verdict, ready, run_outcome
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
    stmt = select(Run).options(lazyload("*")).where(Run.id == run_id).with_for_update(of=Run)
    return session.execute(stmt).scalar_one()


def task_scope(run: Run) -> dict[str, Any]:
    """What expressions see: params, every task's output/status/error, the run."""
    return {
        "params": run.params or {},
        "tasks": {
            t.task_id: {"output": t.output, "status": t.status, "error": t.error}
            for t in run.tasks if t.kind == "task"  # an undo step never hides its task
        },
        "run": {"id": run.id, "trigger": run.trigger},
        # The secrets store arrives with connections; until then no name resolves.
        "secrets": {},
    }


def new_attempt(session: Any, task: TaskRun, spec: dsl.TaskSpec,
                definition: dsl.WorkflowDefinition, status: str,
                delay: float = 0.0, item: TaskItem | None = None) -> Send:
    """The next attempt of a task, or of one for_each element (``item``)."""
    queue = dsl.effective_queue(spec, definition.defaults)
    owner: TaskRun | TaskItem = item if item is not None else task
    owner.attempts += 1
    if item is not None:
        task.attempts += 1  # the task's count is the total over its elements
    attempt = TaskAttempt(
        task_run_id=task.id, item_id=item.id if item is not None else None,
        number=owner.attempts, status=status, queue=queue,
        not_before=now() + dt.timedelta(seconds=delay) if delay else None,
    )
    session.add(attempt)
    session.flush()
    owner.current_attempt_id = attempt.id
    return Send(attempt.id, queue, delay=delay,
                timeout=dsl.effective_timeout(spec, definition.defaults))


def finish_task(task: TaskRun, status: TaskStatus, error: str | None = None) -> None:
    task.status = status.value
    task.finished_at = now()
    if error is not None:
        task.error = error


def advance(session: Any, run: Run, definition: dsl.WorkflowDefinition) -> list[Send]:
    """Decide every task that can be decided now; finish the run when all are.

    A paused run decides nothing: ``resume`` advances it again."""
    if run.status != RunStatus.RUNNING:
        return []
    sends: list[Send] = []
    tasks = {t.task_id: t for t in run.tasks if t.kind == "task"}
    upstream = {t.id: list(t.depends_on) for t in definition.tasks}
    rules = {t.id: t.trigger_rule.value for t in definition.tasks}
    while True:
        status_of = {tid: t.status for tid, t in tasks.items()}
        pending = [tid for tid, s in status_of.items() if s == TaskStatus.PENDING]
        verdicts = ready(pending, upstream, rules, status_of)
        if not verdicts:
            break
        for task_id, verdict in verdicts.items():
            task = tasks[task_id]
            spec = definition.task(task_id)
            if verdict == Verdict.SKIP:
                finish_task(task, TaskStatus.SKIPPED)
            elif verdict == Verdict.UPSTREAM_FAILED:
                finish_task(task, TaskStatus.UPSTREAM_FAILED)
            elif spec.when is not None and not _when(task, spec, run):
                continue  # _when finished the task (skipped, or failed on a bad expression)
            elif spec.for_each is not None:
                sends += items.start(session, run, task, spec, definition)
            else:
                task.status = TaskStatus.QUEUED.value
                sends.append(new_attempt(session, task, spec, definition, "queued"))
    outcome = run_outcome(t.status for t in tasks.values())
    if outcome == RunStatus.FAILED and any(t.compensate for t in definition.tasks):
        finished, more = compensation.advance(session, run, definition)
        sends += more
        if not finished:
            return sends
    if outcome is not None and run.status not in FINISHED_RUN:
        run.status = outcome.value
        run.finished_at = now()
        sends += promote_queued(session, run.workflow_id, definition.max_active_runs)
        if run.parent_attempt_id is not None:
            sends.append(Send(run.parent_attempt_id, "default", child_run=run.id))
    return sends


def promote_queued(session: Any, workflow_id: str, limit: int | None) -> list[Send]:
    """A run finished: start the oldest runs of the workflow that waited for a slot."""
    if not limit:
        return []
    session.flush()
    active = session.execute(
        select(func.count()).select_from(Run).where(
            Run.workflow_id == workflow_id,
            Run.status.in_([RunStatus.RUNNING.value, RunStatus.PAUSED.value]),
        )
    ).scalar_one()
    waiting = session.execute(
        select(Run).where(Run.workflow_id == workflow_id, Run.status == RunStatus.QUEUED.value)
        .order_by(Run.created_at, Run.id).limit(max(0, limit - int(active)))
        .options(lazyload("*")).with_for_update(of=Run)
    ).scalars().all()
    sends: list[Send] = []
    for queued in waiting:
        sends += start(session, queued)
    return sends


def _when(task: TaskRun, spec: dsl.TaskSpec, run: Run) -> bool:
    try:
        if dsl.evaluate_condition(str(spec.when), task_scope(run), path="when"):
            return True
        finish_task(task, TaskStatus.SKIPPED)
    except dsl.ExpressionError as exc:
        finish_task(task, TaskStatus.FAILED, str(exc))
    return False


def begin_attempt(session: Any, attempt_id: str, worker: str | None) -> AttemptContext | None:
    """Mark the attempt running; None when it must not run (stale, duplicate, run over)."""
    attempt = session.get(TaskAttempt, attempt_id)
    if attempt is None:
        return None
    task = attempt.task_run
    run = lock_run(session, task.run_id)
    session.refresh(attempt)
    session.refresh(task)
    owner: TaskRun | TaskItem = attempt.item if attempt.item_id else task
    if attempt.item_id:
        session.refresh(owner)
    if (
        attempt.status not in ("queued", "scheduled")
        or owner.current_attempt_id != attempt.id
        or run.status != RunStatus.RUNNING
        or (attempt.item_id and task.status != TaskStatus.RUNNING)
    ):
        session.rollback()
        return None
    definition = definition_of(run.version)
    spec = compensation.spec_for(definition, task)
    attempt.status = "running"
    attempt.started_at = now()
    attempt.worker = worker
    owner.status = TaskStatus.RUNNING.value
    owner.started_at = owner.started_at or attempt.started_at
    task.started_at = task.started_at or attempt.started_at
    scope = task_scope(run)
    if isinstance(owner, TaskItem):
        scope["item"], scope["index"] = owner.value, owner.index
    context = AttemptContext(
        attempt.id, attempt.number, run.id, spec, definition, scope,
        dsl.effective_timeout(spec, definition.defaults),
    )
    session.commit()
    return context


def complete_attempt(
    session: Any, attempt_id: str, outcome: Outcome, commit: bool = True
) -> list[Send]:
    """Record an attempt's result exactly once and advance the run."""
    attempt = session.get(TaskAttempt, attempt_id)
    if attempt is None:
        return []
    task = attempt.task_run
    run = lock_run(session, task.run_id)
    session.refresh(attempt)
    session.refresh(task)
    owner: TaskRun | TaskItem = attempt.item if attempt.item_id else task
    if attempt.item_id:
        session.refresh(owner)
    if attempt.status != "running" or owner.current_attempt_id != attempt.id:
        session.rollback()  # a late or duplicate completion: the first one counted
        return []
    attempt.finished_at = now()
    if run.status not in (RunStatus.RUNNING, RunStatus.PAUSED):
        attempt.status = "cancelled"
        session.commit()
        return []
    definition = definition_of(run.version)
    spec = compensation.spec_for(definition, task)
    sends: list[Send] = []
    if isinstance(owner, TaskItem):
        sends += items.complete(session, run, task, owner, attempt, spec, definition, outcome)
        sends += advance(session, run, definition)
        if commit:
            session.commit()
        return sends
    if outcome.ok:
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
            wait = retry.wait_seconds(task.attempts)
            sends.append(new_attempt(session, task, spec, definition, "scheduled", wait))
        else:
            finish_task(task, TaskStatus.FAILED)
    sends += advance(session, run, definition)
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


def seconds_early(session: Any, attempt_id: str) -> float:
    """How long before its ``not_before`` this attempt's job arrived (0 when on time).

    RQ's scheduler works in whole seconds, so a delayed job can come up to a second
    early; the job waits out the rest so a wait is never shorter than asked."""
    row = session.execute(
        select(TaskAttempt.not_before).where(TaskAttempt.id == attempt_id)
    ).scalar()
    session.rollback()
    if row is None:
        return 0.0
    return seconds_until(row)


def seconds_until(when: dt.datetime) -> float:
    due = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return max(0.0, (due - now()).total_seconds())


def create_tasks(session: Any, run: Run, definition: dsl.WorkflowDefinition) -> None:
    for position, task_id in enumerate(dsl.topological_order(definition)):
        session.add(TaskRun(run_id=run.id, task_id=task_id, position=position,
                            status=TaskStatus.PENDING.value))
    session.flush()
    session.refresh(run)


def start(session: Any, run: Run) -> list[Send]:
    """Queued -> running, deciding the first ready tasks."""
    run.status = RunStatus.RUNNING.value
    run.started_at = now()
    return advance(session, run, definition_of(run.version))
