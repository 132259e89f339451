"""Compensation (DSL.md): when a run fails, the ``compensate`` steps of the tasks that
succeeded run one at a time, in reverse order of completion; a for_each task is undone
element by element. Each step is a task row of kind "compensation", so it has attempts,
retries and an outcome like any task, and the run records every outcome."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import object_session

from app.extensions import DbSession
from capability import dsl
from capability.dsl import TaskStatus
from capability.engine import foreach, state
from capability.engine.decide import plan_of
from capability.models import AttemptStatus, Run, TaskItem, TaskKind, TaskRun

KIND = TaskKind.COMPENSATION


def spec_for(definition: dsl.WorkflowDefinition, task: TaskRun) -> dsl.TaskSpec:
    """The spec a task row executes: its own, or its task's ``compensate`` step."""
    spec = plan_of(definition).specs[task.task_id]
    if task.kind != KIND or spec.compensate is None:
        return spec
    undo = spec.compensate
    values: Any = None
    if spec.for_each is not None:
        # The step runs once per element that succeeded, newest first.
        values = [i.value for i in sorted(_done_items(task), key=lambda i: -i.index)]
    # model_construct: the step is built from an already validated definition, and its
    # id is the original task's (no new id to check).
    return dsl.TaskSpec.model_construct(
        id=spec.id, type=undo.type, with_=dict(undo.with_ or {}), depends_on=[],
        trigger_rule=dsl.TriggerRule.ALL_SUCCESS, when=None, for_each=values,
        max_parallel=1 if values is not None else None, retry=spec.retry,
        timeout=spec.timeout, compensate=None, queue=spec.queue,
    )


def _done_items(comp: TaskRun) -> list[TaskItem]:
    original = next(t for t in comp.run.tasks if t.task_id == comp.task_id and t.kind != KIND)
    session = object_session(comp)
    assert session is not None
    return list(session.execute(
        select(TaskItem).where(TaskItem.task_run_id == original.id,
                               TaskItem.status == TaskStatus.SUCCEEDED.value)
    ).scalars())


def steps(run: Run) -> list[TaskRun]:
    return sorted((t for t in run.tasks if t.kind == KIND), key=lambda t: t.position)


def plan(session: DbSession, run: Run, definition: dsl.WorkflowDefinition) -> None:
    """Create the steps once, in reverse order of completion of the tasks they undo."""
    done = [t for t in run.tasks if t.kind != KIND and t.status == TaskStatus.SUCCEEDED
            and definition.task(t.task_id).compensate is not None]
    done.sort(key=lambda t: (t.finished_at is not None, t.finished_at), reverse=True)
    base = len(run.tasks)
    for offset, task in enumerate(done):
        session.add(TaskRun(run_id=run.id, task_id=task.task_id, kind=KIND,
                            position=base + offset, status=TaskStatus.PENDING.value))
    session.flush()
    session.refresh(run)


def advance(session: DbSession, run: Run, definition: dsl.WorkflowDefinition) -> bool:
    """Move the compensation on: start its next step; True once every step is done."""
    if not any(t.kind == KIND for t in run.tasks):
        plan(session, run, definition)
    pending = steps(run)
    if any(t.status not in dsl.FINISHED_TASK_STATUSES and t.status != TaskStatus.PENDING
           for t in pending):
        return False  # a step is under way
    for step in pending:
        if step.status != TaskStatus.PENDING:
            continue
        spec = spec_for(definition, step)
        if spec.for_each is not None:
            foreach.start(session, run, step, spec, definition)
            if step.status in dsl.FINISHED_TASK_STATUSES:
                continue  # nothing to undo element by element
            return False
        step.status = TaskStatus.QUEUED.value
        state.new_attempt(session, step, spec, definition, AttemptStatus.QUEUED)
        return False
    return True
