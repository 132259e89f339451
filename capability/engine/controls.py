"""Run controls: cancel, pause, resume, retry, and the answer to an approval task.

Each is one transaction on the locked run; what it makes ready is returned as ``Send``
items (enqueue after commit), and attempts that must stop are returned by id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from app.errors import Conflict, Forbidden, ValidationFailed
from capability import dsl
from capability.dsl import FINISHED_TASK_STATUSES, RunStatus, TaskStatus
from capability.engine import compensation, foreach, runner
from capability.engine.dispatch import Send
from capability.models import Run, TaskAttempt, TaskRun

LIVE_ATTEMPT = ("queued", "scheduled", "running", "waiting")


@dataclass
class ControlResult:
    run: Run
    sends: list[Send] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)  # attempt ids running on a worker


def _attempts(session: Any, run: Run, statuses: tuple[str, ...]) -> list[TaskAttempt]:
    return list(session.execute(
        select(TaskAttempt).join(TaskRun).where(
            TaskRun.run_id == run.id, TaskAttempt.status.in_(statuses),
            TaskAttempt.id == TaskRun.current_attempt_id,
        )
    ).scalars())


def cancel(session: Any, run_id: str) -> ControlResult:
    run = runner.lock_run(session, run_id)
    if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED):
        raise Conflict(f"The run is {run.status}; only a live run can be cancelled")
    result = ControlResult(run)
    for attempt in _attempts(session, run, LIVE_ATTEMPT):
        if attempt.status == "running":
            result.stop.append(attempt.id)
        attempt.status = "cancelled"
        attempt.finished_at = runner.now()
    for task in run.tasks:
        if task.status not in FINISHED_TASK_STATUSES:
            task.status = TaskStatus.CANCELLED.value
            task.finished_at = runner.now()
    run.status = RunStatus.CANCELLED.value
    run.finished_at = runner.now()
    result.sends = runner.promote_queued(
        session, run.workflow_id, runner.definition_of(run.version).max_active_runs
    )
    return result


def pause(session: Any, run_id: str) -> ControlResult:
    run = runner.lock_run(session, run_id)
    # A queued run whose first tasks wait for a worker may be paused; one that waits for
    # a max_active_runs slot holds nothing to pause (it can be cancelled).
    if not (run.status == RunStatus.RUNNING or (
            run.status == RunStatus.QUEUED and runner.admitted(session, run.id))):
        what = "waiting for a slot (max_active_runs)" if run.status == RunStatus.QUEUED \
            else run.status
        raise Conflict(f"The run is {what}; only a running or starting run can be paused")
    # Attempts already on a worker finish; nothing new starts until resume.
    run.status = RunStatus.PAUSED.value
    return ControlResult(run)


def resume(session: Any, run_id: str) -> ControlResult:
    run = runner.lock_run(session, run_id)
    if run.status != RunStatus.PAUSED:
        raise Conflict(f"The run is {run.status}; only a paused run can be resumed")
    # Paused before any task began: queued again, running once a worker begins one.
    run.status = (RunStatus.RUNNING if run.started_at else RunStatus.QUEUED).value
    result = ControlResult(run)
    definition = runner.definition_of(run.version)
    # Jobs that reached a worker during the pause were dropped: send them again.
    for attempt in _attempts(session, run, ("queued", "scheduled")):
        wait = runner.seconds_until(attempt.not_before) if attempt.not_before else 0.0
        spec = compensation.spec_for(definition, attempt.task_run)
        result.sends.append(Send(attempt.id, attempt.queue, delay=wait,
                                 timeout=dsl.effective_timeout(spec, definition.defaults)))
    result.sends += runner.advance(session, run, definition, admit=True)
    return result


def retry(session: Any, run_id: str) -> ControlResult:
    """Run the failed and upstream_failed tasks again, with a fresh retry budget."""
    run = runner.lock_run(session, run_id)
    if run.status not in (RunStatus.FAILED, RunStatus.RUNNING, RunStatus.CANCELLED):
        raise Conflict(f"The run is {run.status}; there is nothing to retry")
    if any(t.kind == "compensation" for t in run.tasks):
        raise Conflict("This run was compensated (its work undone); start a new run instead")
    again = [t for t in run.tasks
             if t.status in (TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED, TaskStatus.CANCELLED)]
    if not again:
        raise Conflict("No task of this run failed")
    definition = runner.definition_of(run.version)
    sends: list[Send] = []
    # A finished run is queued again, and running once a worker begins one of its tasks;
    # when the workflow has max_active_runs active already, it waits for a slot
    # (runner.start sends its tasks then).
    admit = run.status != RunStatus.RUNNING
    limit = definition.max_active_runs
    waits = admit and limit is not None and runner.active_runs(session, run.workflow_id) >= limit
    run.status = RunStatus.QUEUED.value if admit else run.status
    run.finished_at = None
    for task in again:
        task.retry_base = task.attempts
        task.error = None
        task.finished_at = None
        task.current_attempt_id = None
        if foreach.restart(session, task):
            if not waits:
                sends += foreach.fill(session, task, definition.task(task.task_id), definition)
        else:
            task.status = TaskStatus.PENDING.value
    if not waits:
        sends += runner.advance(session, run, definition, admit=admit)
    return ControlResult(run, sends)


def answer_approval(
    session: Any, run_id: str, task_id: str, approver: str, roles: frozenset[str],
    approve: bool, comment: str,
) -> ControlResult:
    run = runner.lock_run(session, run_id)
    task = next((t for t in run.tasks if t.task_id == task_id and t.kind == "task"), None)
    if task is None:
        raise ValidationFailed(f"The run has no task {task_id!r}",
                               [{"path": "task_id", "message": "unknown task"}])
    if task.status != TaskStatus.WAITING_APPROVAL:
        raise Conflict(f"Task {task_id!r} is {task.status}, not waiting for approval")
    wanted = _approvers(session, run, task_id)
    if wanted and wanted not in roles and "Admin" not in roles:
        raise Forbidden(f"Only a user with the role {wanted!r} may answer this approval")
    attempt = session.get(TaskAttempt, task.current_attempt_id)
    # complete_attempt takes a running attempt; a waiting one is answered now.
    attempt.status = "running"
    session.flush()
    outcome = (
        runner.Outcome.success({"approved_by": approver, "comment": comment}) if approve
        else runner.Outcome.failure(f"rejected by {approver}: {comment}".rstrip(": "),
                                    retriable=False)
    )
    sends = runner.complete_attempt(session, attempt.id, outcome, commit=False)
    return ControlResult(run, sends)


def _approvers(session: Any, run: Run, task_id: str) -> str | None:
    """The role that may answer the approval: ``with.approvers``, rendered like the rest
    of the task's ``with`` (it reads params and finished tasks only, so it renders now
    as it did when the task began; had it failed then, the task would have failed)."""
    plan = runner.plan_for(session, run)
    spec = plan.specs[task_id]
    wanted = (spec.with_ or {}).get("approvers")
    if not isinstance(wanted, str) or not dsl.is_template(wanted):
        return wanted
    scope = runner.scope_for(session, run, plan.reads(spec, "with"))
    try:
        rendered = dsl.render(wanted, scope, path="with.approvers")
    except dsl.ExpressionError as exc:
        raise Conflict(f"Task {task_id!r}: {exc}") from exc
    return str(rendered) if rendered not in (None, "") else None
