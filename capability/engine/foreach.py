"""``for_each``: one execution per element, at most ``max_parallel`` at once, the
outputs in input order; the task fails when an element fails after its retries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from app.extensions import DbSession
from app.runtime import interrupt
from capability import dsl
from capability.dsl import TaskStatus
from capability.engine import masking, state
from capability.engine.decide import plan_of
from capability.engine.settings import EngineSettings
from capability.models import AttemptStatus, Run, TaskAttempt, TaskItem, TaskRun

ACTIVE = (TaskStatus.QUEUED.value, TaskStatus.RUNNING.value, TaskStatus.RETRYING.value)


def _items(session: DbSession, task: TaskRun) -> list[TaskItem]:
    return list(session.execute(
        select(TaskItem).where(TaskItem.task_run_id == task.id).order_by(TaskItem.index)
    ).scalars())


def start(session: DbSession, run: Any, task: TaskRun, spec: dsl.TaskSpec,
          definition: dsl.WorkflowDefinition) -> None:
    """The task became ready: a job makes its elements (``evaluate`` and ``expand``, on
    a worker).

    Not the transaction that decided it, which may be a web request (a start, a resume,
    a retry; a 5,000-element list made there took the request 7.7 s) and holds the
    run's lock: the task's ``when`` and list are expressions, evaluated with no
    transaction open. The task is queued with one attempt of no element, which a worker
    begins like any attempt (``runner.begin_attempt``: ``AttemptContext.expands``); the
    reaper sends it again like any attempt whose job is lost."""
    task.status = TaskStatus.QUEUED.value
    state.new_attempt(session, task, spec, definition, AttemptStatus.QUEUED)


@dataclass(frozen=True)
class Expansion:
    """What evaluating a for_each task's ``when`` and list gave: its elements (masked),
    or why it makes none: ``skipped`` (a false ``when``), ``error`` (a failure naming
    the field, not retried)."""

    values: list[Any] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None


def evaluate(session: DbSession, ctx: state.AttemptContext,
             settings: EngineSettings) -> Expansion:
    """Evaluate the ``when`` and the list of the task an expanding attempt belongs to.

    Reads what they read in the caller's unit of work (it must hold no lock: the
    attempt's begin was committed), ends that read, and only then evaluates, within
    the expression budget: an expression that runs for its whole budget keeps no row
    of the run locked, so a cancel meanwhile goes through at once (and wins: the
    elements are stored by ``runner.record_expansion``, which finds the attempt
    cancelled)."""
    spec = ctx.task
    plan = plan_of(ctx.definition)
    fields = ("when", "for_each") if spec.when is not None else ("for_each",)
    scope: dict[str, Any] = {}
    try:
        run = session.get(Run, ctx.run_id)
        if run is not None:
            scope = state.scope_for(session, run, _union(plan.reads(spec, f) for f in fields),
                                    _union(plan.secrets(spec, f) for f in fields), settings)
    finally:
        session.rollback()  # nothing was written: no transaction while it evaluates
    if run is None:
        return Expansion(error="the run is gone")
    budget = settings.expression_budget
    try:
        # A cancel's stop ends the evaluation at once (``JobStopped``), not its budget.
        with interrupt.interruptible():
            if spec.when is not None and not dsl.evaluate_condition(
                    str(spec.when), scope, path="when", budget=budget):
                return Expansion(skipped=f"when was false: {spec.when}")
            items = dsl.evaluate_items(spec.for_each, scope, path="for_each", budget=budget)
    except dsl.ExpressionError as exc:
        return Expansion(error=masking.text(str(exc), scope) or str(exc))
    # The elements are stored (TaskItem.value): never a secret in clear.
    return Expansion(values=masking.mask(items, scope))


def _union(parts: Iterable[frozenset[str] | None]) -> frozenset[str] | None:
    """What several fields read together (``None``: anything)."""
    found: frozenset[str] = frozenset()
    for part in parts:
        if part is None:
            return None
        found |= part
    return found


def expand(session: DbSession, task: TaskRun, spec: dsl.TaskSpec,
           definition: dsl.WorkflowDefinition, made: Expansion) -> None:
    """Store what ``evaluate`` gave, under the run's lock: the task is skipped or
    failed, succeeds at once (an empty list, output ``[]``), or its elements are stored
    and the first ``max_parallel`` queued."""
    if made.skipped is not None:
        task.started_at = None
        state.finish_task(task, TaskStatus.SKIPPED, reason=made.skipped)
        return
    if made.error is not None:
        state.finish_task(task, TaskStatus.FAILED, made.error)
        return
    task.started_at = task.started_at or state.now()
    if not made.values:
        task.output = []
        state.finish_task(task, TaskStatus.SUCCEEDED)
        return
    task.status = TaskStatus.RUNNING.value
    rows = [TaskItem(task_run_id=task.id, index=index, value=value,
                     status=TaskStatus.PENDING.value)
            for index, value in enumerate(made.values)]
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
