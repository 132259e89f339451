"""``for_each``: one execution per element, at most ``max_parallel`` at once, the
outputs in input order; the task fails when an element fails after its retries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from app.extensions import DbSession
from capability import dsl
from capability.dsl import TaskStatus
from capability.engine import masking, outbox, state
from capability.engine.decide import plan_of
from capability.models import AttemptStatus, Run, TaskAttempt, TaskItem, TaskRun

ACTIVE = (TaskStatus.QUEUED.value, TaskStatus.RUNNING.value, TaskStatus.RETRYING.value)


def _items(session: DbSession, task: TaskRun) -> list[TaskItem]:
    return list(session.execute(
        select(TaskItem).where(TaskItem.task_run_id == task.id).order_by(TaskItem.index)
    ).scalars())


def start(session: DbSession, run: Any, task: TaskRun, spec: dsl.TaskSpec,
          definition: dsl.WorkflowDefinition) -> None:
    """The task became ready: a job makes its elements (``expand``, on a worker).

    Not the transaction that decided it, which may be a web request (a start, a resume,
    a retry): a 5,000-element list made there took the request 7.7 s. The task is
    queued with one attempt of no element; ``runner.begin_attempt`` expands it instead
    of running it, and the reaper sends it again like any attempt whose job is lost."""
    task.status = TaskStatus.QUEUED.value
    state.new_attempt(session, task, spec, definition, AttemptStatus.QUEUED)


def expand(session: DbSession, run: Any, task: TaskRun, spec: dsl.TaskSpec,
           definition: dsl.WorkflowDefinition) -> None:
    """Evaluate the task's list and queue the first elements (on a worker)."""
    scope: dict[str, Any] = {}
    try:
        plan = plan_of(definition)
        scope = state.scope_for(session, run, plan.reads(spec, "for_each"),
                                plan.secrets(spec, "for_each"))
        # The elements are stored (TaskItem.value): never a secret in clear.
        items = dsl.evaluate_items(spec.for_each, scope, path="for_each",
                                   budget=outbox.of(session).settings.expression_budget)
        values = masking.mask(items, scope)
    except dsl.ExpressionError as exc:
        state.finish_task(task, TaskStatus.FAILED, masking.text(str(exc), scope))
        return
    task.started_at = state.now()
    if not values:
        task.output = []
        state.finish_task(task, TaskStatus.SUCCEEDED)
        return
    task.status = TaskStatus.RUNNING.value
    rows = [TaskItem(task_run_id=task.id, index=index, value=value,
                     status=TaskStatus.PENDING.value) for index, value in enumerate(values)]
    session.add_all(rows)
    session.flush()
    _queue(session, task, spec, definition, rows[:spec.max_parallel or len(rows)])


def fill(session: DbSession, task: TaskRun, spec: dsl.TaskSpec,
         definition: dsl.WorkflowDefinition, counts: dict[str, int] | None = None) -> None:
    """Queue pending elements while fewer than ``max_parallel`` are under way.

    Reads how many elements are in each state (``counts``, when the caller has them)
    and then only the pending elements it queues: one completion of a task of many
    elements frees one slot."""
    if counts is None:
        counts = _counts(session, task)
    pending = counts.get(TaskStatus.PENDING.value, 0)
    free = pending
    if spec.max_parallel:
        free = min(pending, spec.max_parallel - sum(counts.get(s, 0) for s in ACTIVE))
    if free <= 0:
        return
    rows = list(session.execute(
        select(TaskItem).where(TaskItem.task_run_id == task.id,
                               TaskItem.status == TaskStatus.PENDING.value)
        .order_by(TaskItem.index).limit(free)).scalars())
    _queue(session, task, spec, definition, rows)


def _counts(session: DbSession, task: TaskRun) -> dict[str, int]:
    return dict(session.execute(  # type: ignore[arg-type]
        select(TaskItem.status, func.count()).where(TaskItem.task_run_id == task.id)
        .group_by(TaskItem.status)).all())


def _queue(session: DbSession, task: TaskRun, spec: dsl.TaskSpec,
           definition: dsl.WorkflowDefinition, rows: list[TaskItem]) -> None:
    for item in rows:
        item.status = TaskStatus.QUEUED.value
        state.new_attempt(session, task, spec, definition, AttemptStatus.QUEUED, item=item)


def complete(session: DbSession, run: Run, task: TaskRun, item: TaskItem,
             attempt: TaskAttempt, spec: dsl.TaskSpec, definition: dsl.WorkflowDefinition,
             outcome: state.Outcome) -> None:
    """Record an element's attempt; the task ends when every element succeeded, or when
    one failed for good (the retry decision, ``state.after_failure``)."""
    attempt.status = AttemptStatus.SUCCEEDED if outcome.ok else AttemptStatus.FAILED
    attempt.error = outcome.error
    if task.status != TaskStatus.RUNNING:
        return  # another element already failed the task; this result changes nothing
    if outcome.ok:
        item.status, item.output, item.finished_at = TaskStatus.SUCCEEDED.value, \
            outcome.output, state.now()
        counts = _counts(session, task)
        if set(counts) == {TaskStatus.SUCCEEDED.value}:
            task.output = list(session.execute(
                select(TaskItem.output).where(TaskItem.task_run_id == task.id)
                .order_by(TaskItem.index)).scalars())
            state.finish_task(task, TaskStatus.SUCCEEDED)
            return
        fill(session, task, spec, definition, counts)
        return
    item.error = outcome.error
    if not state.after_failure(session, task, spec, definition, outcome, item):
        return
    item.status, item.finished_at = TaskStatus.FAILED.value, state.now()
    for other in _items(session, task):
        if other.status == TaskStatus.PENDING:
            other.status = TaskStatus.CANCELLED.value
    state.finish_task(task, TaskStatus.FAILED, f"item {item.index}: {outcome.error}")


def restart(session: DbSession, task: TaskRun) -> bool:
    """A manual retry of a for_each task: its failed and unfinished elements run again,
    the ones that succeeded keep their output. False when the task has no elements yet."""
    rows = _items(session, task)
    if not rows:
        return False
    for item in rows:
        if item.status != TaskStatus.SUCCEEDED:
            item.status = TaskStatus.PENDING.value
            item.retry_base = item.attempts
            item.error = None
            item.current_attempt_id = None
    task.status = TaskStatus.RUNNING.value
    return True
