"""``workflow`` tasks (DSL.md): start a child run of a workflow of the same team and
wait for it without holding a worker; its task outputs become the task's output, and
its failure fails the task. Nesting deeper than ``MAX_DEPTH`` fails.

The child's end reaches the parent through a follow-up job (``Send.child_run``),
enqueued after the child's transaction committed, so no transaction ever holds the
locks of two runs. Nothing here commits: the job does (``jobs``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from app.audit.recorder import build_event, record
from app.extensions import DbSession
from app.security.actor import SYSTEM
from capability import dsl
from capability.dsl import RunStatus
from capability.engine import runner, state
from capability.engine.decide import unknown_queues
from capability.models import AttemptStatus, Run, TaskAttempt, TaskKind, Workflow, WorkflowVersion

MAX_DEPTH = 10


def start_child(session: DbSession, attempt_id: str, params: dict[str, Any],
                queues: Sequence[str] | None = None) -> bool:
    """Called by the worker for a running `workflow` attempt: create the child run (or
    fail the task: no such workflow, too deep, bad params). False when the attempt no
    longer runs (the owner rolls back).

    ``queues`` are the configured ones (``RQ_QUEUES``): a child with a task on another
    queue would wait forever, so the `workflow` task fails instead, as a start through
    the API is refused."""
    attempt = session.get(TaskAttempt, attempt_id)
    if attempt is None or attempt.status != AttemptStatus.RUNNING:
        return False
    parent = state.lock_run(session, attempt.task_run.run_id)
    name = str(params.get("workflow", ""))
    problem = None
    child_workflow = session.execute(
        select(Workflow).where(Workflow.team_id == parent.team_id, Workflow.name == name,
                               Workflow.deleted_at.is_(None))
    ).scalar()
    if child_workflow is None:
        problem = f"with.workflow: no workflow named {name!r} in this team"
    elif parent.depth + 1 > MAX_DEPTH:
        problem = f"with.workflow: sub-workflows nest deeper than {MAX_DEPTH}"
    if problem is None and child_workflow is not None:
        version = session.execute(select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == child_workflow.id,
            WorkflowVersion.version == child_workflow.current_version)).scalar_one()
        definition = state.definition_of(version)
        resolved, errors = dsl.validate_params(definition, params.get("params") or {})
        if errors:
            problem = "with.params: " + "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        else:
            unserved = unknown_queues(definition, queues)
            if unserved:
                problem = f"with.workflow: {name!r} cannot start: " + "; ".join(
                    f"{e['path']}: {e['message']}" for e in unserved)
    if problem is not None:
        return runner.complete_attempt(session, attempt_id,
                                       state.Outcome.failure(problem, retriable=False))
    assert child_workflow is not None
    starts = state.below_limit(session, child_workflow.id, definition.max_active_runs)
    child = Run(
        workflow_id=child_workflow.id, version_id=version.id, workflow_version=version.version,
        team_id=parent.team_id, params=resolved, trigger="workflow",
        created_by=parent.created_by, parent_run_id=parent.id, parent_attempt_id=attempt.id,
        depth=parent.depth + 1,
    )
    runner.open_run(session, child, definition, starts)
    attempt.status = AttemptStatus.WAITING
    session.flush()  # before the audit trail's lock, taken at the commit (runs.start_run)
    # A run start is audited whoever starts it: here the engine, for the parent run.
    record(session, build_event(
        SYSTEM, "start", "run", child.id, team=child_workflow.team.name,
        tenant=child_workflow.team.tenant.name,
        after={"workflow": child_workflow.name, "version": version.version,
               "trigger": "workflow", "parent_run": parent.id,
               "parent_task": attempt.task_run.task_id, "started_by": parent.created_by},
    ))
    return True


def child_finished(session: DbSession, child_run_id: str) -> bool:
    """The follow-up of a finished child: complete the parent's waiting attempt. False
    when there is nothing to complete (already answered, or the parent was cancelled:
    the owner rolls back)."""
    child = session.get(Run, child_run_id)
    if child is None or child.parent_attempt_id is None:
        return False
    attempt = session.get(TaskAttempt, child.parent_attempt_id)
    if attempt is None or attempt.status != AttemptStatus.WAITING:
        return False
    attempt.status = AttemptStatus.RUNNING  # complete_attempt records running attempts
    session.flush()
    if child.status == RunStatus.SUCCEEDED:
        outcome = state.Outcome.success(
            {t.task_id: t.output for t in child.tasks if t.kind == TaskKind.TASK})
    else:
        outcome = state.Outcome.failure(f"sub-workflow run {child.id} {child.status}")
    return runner.complete_attempt(session, attempt.id, outcome)


def live_children(session: DbSession, run_id: str) -> list[str]:
    return list(session.execute(select(Run.id).where(
        Run.parent_run_id == run_id,
        Run.status.in_([RunStatus.QUEUED.value, RunStatus.RUNNING.value, RunStatus.PAUSED.value]),
    )).scalars())
