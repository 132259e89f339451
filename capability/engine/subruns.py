"""``workflow`` tasks (DSL.md): start a child run of a workflow of the same team and
wait for it without holding a worker; its task outputs become the task's output, and
its failure fails the task. Nesting deeper than ``MAX_DEPTH`` fails.

The child's end reaches the parent through a follow-up job (``Send.child_run``),
enqueued after the child's transaction committed, so no transaction ever holds the
locks of two runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app.audit.recorder import build_event, record
from app.security.actor import SYSTEM
from capability import dsl
from capability.dsl import RunStatus
from capability.engine import runner
from capability.engine.dispatch import Send
from capability.models import Run, TaskAttempt, Workflow, WorkflowVersion

MAX_DEPTH = 10


def start_child(session: Any, attempt_id: str, params: dict[str, Any],
                queues: list[str] | None = None) -> list[Send]:
    """Called by the worker for a running `workflow` attempt: create the child run.

    ``queues`` are the configured ones (``RQ_QUEUES``): a child with a task on another
    queue would wait forever, so the `workflow` task fails instead, as a start through
    the API is refused."""
    attempt = session.get(TaskAttempt, attempt_id)
    if attempt is None or attempt.status != "running":
        session.rollback()
        return []
    parent = runner.lock_run(session, attempt.task_run.run_id)
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
        definition = runner.definition_of(version)
        resolved, errors = dsl.validate_params(definition, params.get("params") or {})
        if errors:
            problem = "with.params: " + "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        else:
            from capability.runs.service import unknown_queues

            unserved = unknown_queues(definition, queues)
            if unserved:
                problem = f"with.workflow: {name!r} cannot start: " + "; ".join(
                    f"{e['path']}: {e['message']}" for e in unserved)
    if problem is not None:
        return runner.complete_attempt(session, attempt_id,
                                       runner.Outcome.failure(problem, retriable=False))
    assert child_workflow is not None
    from capability.runs.service import below_limit

    starts = below_limit(session, child_workflow.id, definition.max_active_runs)
    child = Run(
        workflow_id=child_workflow.id, version_id=version.id, workflow_version=version.version,
        team_id=parent.team_id, params=resolved, trigger="workflow",
        created_by=parent.created_by, parent_run_id=parent.id, parent_attempt_id=attempt.id,
        depth=parent.depth + 1,
    )
    sends = runner.open_run(session, child, definition, starts)
    attempt.status = "waiting"
    session.flush()  # before the audit trail's lock, taken at the commit (runs.start_run)
    # A run start is audited whoever starts it: here the engine, for the parent run.
    record(session, build_event(
        SYSTEM, "start", "run", child.id, team=child_workflow.team.name,
        tenant=child_workflow.team.tenant.name,
        after={"workflow": child_workflow.name, "version": version.version,
               "trigger": "workflow", "parent_run": parent.id,
               "parent_task": attempt.task_run.task_id, "started_by": parent.created_by},
    ))
    session.commit()
    return sends


def child_finished(session: Any, child_run_id: str) -> list[Send]:
    """The follow-up of a finished child: complete the parent's waiting attempt."""
    child = session.get(Run, child_run_id)
    if child is None or child.parent_attempt_id is None:
        return []
    attempt = session.get(TaskAttempt, child.parent_attempt_id)
    if attempt is None or attempt.status != "waiting":
        session.rollback()
        return []  # already answered, or the parent was cancelled
    attempt.status = "running"  # complete_attempt records results of running attempts
    session.flush()
    if child.status == RunStatus.SUCCEEDED:
        outcome = runner.Outcome.success(
            {t.task_id: t.output for t in child.tasks if t.kind == "task"})
    else:
        outcome = runner.Outcome.failure(f"sub-workflow run {child.id} {child.status}")
    return runner.complete_attempt(session, attempt.id, outcome)


def live_children(session: Any, run_id: str) -> list[str]:
    return list(session.execute(select(Run.id).where(
        Run.parent_run_id == run_id,
        Run.status.in_([RunStatus.QUEUED.value, RunStatus.RUNNING.value, RunStatus.PAUSED.value]),
    )).scalars())
