"""Run controls: cancel, pause, resume, retry, and the answer to an approval task.

``decide.controls_of`` is the rule of which control a run allows now and why the others
not: each control below refuses with its reason, and the API (``controls``,
``retry_blocked``), the live updates and the run page show exactly what it allows.
``decide.may_answer`` is the rule of who may answer an approval. Each control is one
step on the locked run inside its owner's transaction (a service); what it makes ready
or must stop goes out after the commit (``outbox``).
"""

from __future__ import annotations

from sqlalchemy import select

from app.errors import Conflict, Forbidden, ValidationFailed
from app.extensions import DbSession
from capability import dsl
from capability.dsl import FINISHED_TASK_STATUSES, RunStatus, TaskStatus
from capability.engine import advance, compensation, foreach, outbox, runner, state
from capability.engine.decide import RETRIED, Controls, controls_over, may_answer
from capability.engine.dispatch import Send
from capability.engine.settings import EngineSettings
from capability.models import LIVE_ATTEMPT, AttemptStatus, Run, TaskAttempt, TaskKind, TaskRun

__all__ = ["Controls", "answer_approval", "approvers_of", "cancel", "controls_for",
           "legacy_approvers", "may_answer", "pause", "resume", "retry"]


def controls_for(session: DbSession, run: Run) -> Controls:
    """``controls_of`` for a run (its tasks; whether it holds its slot, when queued)."""
    return controls_over(run.status, ((t.kind, t.status) for t in run.tasks),
                         lambda: state.admitted(session, run.id))


def _allow(session: DbSession, run: Run, action: str) -> None:
    rule = controls_for(session, run)
    if action in rule.blocked:
        raise Conflict(rule.blocked[action])


def _current_attempts(session: DbSession, run: Run,
                      statuses: tuple[str, ...]) -> list[TaskAttempt]:
    return list(session.execute(
        select(TaskAttempt).join(TaskRun).where(
            TaskRun.run_id == run.id, TaskAttempt.status.in_(statuses),
            TaskAttempt.id == TaskRun.current_attempt_id,
        )
    ).scalars())


def cancel(session: DbSession, run_id: str) -> Run:
    run = state.lock_run(session, run_id)
    _allow(session, run, "cancel")
    box = outbox.of(session)
    at = state.now()
    for attempt in _current_attempts(session, run, LIVE_ATTEMPT):
        if attempt.status == AttemptStatus.RUNNING:
            box.stop(attempt.id)
        attempt.status = AttemptStatus.CANCELLED
        attempt.finished_at = at
    for task in run.tasks:
        if task.status not in FINISHED_TASK_STATUSES:
            task.status = TaskStatus.CANCELLED.value
            task.finished_at = at
    run.status = RunStatus.CANCELLED.value
    run.finished_at = at
    box.touch(run.id)
    definition = state.plan_for(session, run).definition
    state.log_finished(session, run, definition.name)
    state.note_finished(session, run)
    advance.promote_queued(session, run.workflow_id, definition.max_active_runs)
    return run


def pause(session: DbSession, run_id: str) -> Run:
    run = state.lock_run(session, run_id)
    _allow(session, run, "pause")
    # Attempts already on a worker finish; nothing new starts until resume.
    run.status = RunStatus.PAUSED.value
    outbox.of(session).touch(run.id)
    return run


def resume(session: DbSession, run_id: str) -> Run:
    run = state.lock_run(session, run_id)
    _allow(session, run, "resume")
    # Paused before any task began: queued again, running once a worker begins one.
    run.status = (RunStatus.RUNNING if run.started_at else RunStatus.QUEUED).value
    box = outbox.of(session)
    box.touch(run.id)
    definition = state.plan_for(session, run).definition
    # Jobs that reached a worker during the pause were dropped: send them again.
    for attempt in _current_attempts(session, run, (AttemptStatus.QUEUED,
                                                    AttemptStatus.SCHEDULED)):
        wait = state.seconds_until(attempt.not_before) if attempt.not_before else 0.0
        spec = compensation.spec_for(definition, attempt.task_run)
        box.send(Send(attempt.id, attempt.queue, delay=wait,
                      timeout=dsl.effective_timeout(spec, definition.defaults)))
    advance.advance(session, run, definition, admit=True)
    return run


def retry(session: DbSession, run_id: str) -> Run:
    """Run the failed, upstream_failed and cancelled tasks again, each with a fresh retry
    budget."""
    run = state.lock_run(session, run_id)
    _allow(session, run, "retry")
    again = [t for t in run.tasks if t.status in RETRIED]
    definition = state.plan_for(session, run).definition
    # A finished run is queued again, and running once a worker begins one of its tasks;
    # when the workflow has max_active_runs active already, it waits for a slot
    # (advance.start sends its tasks then).
    admit = run.status != RunStatus.RUNNING
    limit = definition.max_active_runs
    waits = admit and limit is not None and state.active_runs(session, run.workflow_id) >= limit
    run.status = RunStatus.QUEUED.value if admit else run.status
    run.finished_at = None
    outbox.of(session).touch(run.id)
    for task in again:
        task.retry_base = task.attempts
        task.error = None
        task.reason = None
        task.finished_at = None
        task.current_attempt_id = None
        if foreach.restart(session, task):
            if not waits:
                foreach.fill(session, task, definition.task(task.task_id), definition)
        else:
            task.status = TaskStatus.PENDING.value
    if not waits:
        advance.advance(session, run, definition, admit=admit)
    return run


def answer_approval(session: DbSession, run_id: str, task_id: str, approver: str,
                    roles: frozenset[str], approve: bool, comment: str,
                    legacy: str | None = None) -> Run:
    """``legacy``: who may answer an approval waiting since before its prompt was kept,
    rendered before this step (``legacy_approvers``)."""
    run = state.lock_run(session, run_id)
    task = next((t for t in run.tasks if t.task_id == task_id and t.kind == TaskKind.TASK),
                None)
    if task is None:
        raise ValidationFailed(f"The run has no task {task_id!r}",
                               [{"path": "task_id", "message": "unknown task"}])
    if task.status != TaskStatus.WAITING_APPROVAL:
        raise Conflict(f"Task {task_id!r} is {task.status}, not waiting for approval")
    wanted = approvers_of(task, legacy)
    if not may_answer(roles, wanted):
        raise Forbidden(f"Only a user with the role {wanted!r} may answer this approval")
    attempt = session.get(TaskAttempt, task.current_attempt_id)
    assert attempt is not None
    # complete_attempt takes a running attempt; a waiting one is answered now.
    attempt.status = AttemptStatus.RUNNING
    session.flush()
    outcome = (
        state.Outcome.success({"approved_by": approver, "comment": comment}) if approve
        else state.Outcome.failure(f"rejected by {approver}: {comment}".rstrip(": "),
                                   retriable=False)
    )
    if not runner.complete_attempt(session, attempt.id, outcome):
        raise Conflict(f"Task {task_id!r} was answered already")
    return run


def approvers_of(task: TaskRun, legacy: str | None = None) -> str | None:
    """The role that may answer a waiting approval: ``with.approvers`` as it was rendered
    when the task began to wait; ``legacy`` for one waiting since before prompts were
    kept (migration 0006)."""
    if task.prompt is not None:
        approvers = task.prompt.get("approvers")
        return str(approvers) if approvers not in (None, "") else None
    return legacy


def legacy_approvers(session: DbSession, run: Run, task_id: str,
                     settings: EngineSettings) -> str | None:
    """``with.approvers`` of an approval waiting since before prompts were kept
    (migration 0006), rendered now as it was then (it reads params and finished tasks
    only); None for any other task. Called before the answer's step, in its owner's
    session: a template's read is ended (``session.rollback()``) before it is rendered,
    so no transaction or lock is held while it runs (within its budget)."""
    task = session.execute(select(TaskRun).where(
        TaskRun.run_id == run.id, TaskRun.task_id == task_id,
        TaskRun.kind == TaskKind.TASK)).scalar_one_or_none()
    if task is None or task.status != TaskStatus.WAITING_APPROVAL or task.prompt is not None:
        return None
    plan = state.plan_for(session, run)
    spec = plan.specs[task_id]
    wanted = (spec.with_ or {}).get("approvers")
    if not isinstance(wanted, str) or not dsl.is_template(wanted):
        return str(wanted) if wanted else None
    try:
        scope = state.scope_for(session, run, plan.reads(spec, "with"))
    finally:
        session.rollback()  # nothing was written: no transaction while it renders
    try:
        rendered = dsl.render(wanted, scope, path="with.approvers",
                              budget=settings.expression_budget)
    except dsl.ExpressionError as exc:
        raise Conflict(f"Task {task_id!r}: {exc}") from exc
    return str(rendered) if rendered not in (None, "") else None
