"""Starting and reading runs. Every function takes the acting user."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.audit.recorder import build_event, record
from app.errors import Forbidden, NotFound, ValidationFailed
from app.extensions import DbSession
from app.security.actor import Actor
from app.security.roles import AUTHOR, OPERATOR
from app.security.scope import scoped
from capability import dsl, service
from capability.engine import controls, runner, subruns
from capability.engine.dispatch import Dispatcher
from capability.models import Run, TaskAttempt, TaskItem, TaskRun, Workflow

TRIGGERS = ("manual", "api", "schedule", "webhook", "event")


def _require_operator(actor: Actor, team_id: str) -> None:
    if actor.is_admin:
        return
    if not ({OPERATOR, AUTHOR} & actor.roles) or team_id not in actor.team_ids:
        raise Forbidden("Only an Operator or Author of the workflow's team may start runs")


def unknown_queues(
    definition: dsl.WorkflowDefinition, queues: list[str] | None
) -> list[dict[str, str]]:
    """A task on a queue no worker is configured for would wait forever: refuse to start."""
    if queues is None:
        return []
    errors = []
    for i, task in enumerate(definition.tasks):
        queue = dsl.effective_queue(task, definition.defaults)
        if queue not in queues:
            errors.append({"path": f"tasks[{i}].queue",
                           "message": f"no worker listens on queue {queue!r} "
                                      f"(configured: {', '.join(queues)})"})
    return errors


def start_run(
    session: DbSession, actor: Actor, dispatcher: Dispatcher, workflow_id: str,
    params: Any = None, idempotency_key: str | None = None, trigger: str = "api",
) -> tuple[Run, bool]:
    """Create a run of the current version and queue its first tasks.

    Returns ``(run, created)``: the same idempotency key again gives the first run back.
    """
    workflow = service.get_workflow(session, actor, workflow_id)
    _require_operator(actor, workflow.team_id)
    if idempotency_key is not None:
        if not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 128:
            raise ValidationFailed("Invalid idempotency key", [
                {"path": "idempotency_key", "message": "a string of 1 to 128 characters"}])
        existing = _by_key(session, workflow.id, idempotency_key)
        if existing is not None:
            return existing, False
    if params is not None and not isinstance(params, dict):
        raise ValidationFailed("params must be an object",
                               [{"path": "params", "message": "expected an object"}])
    version = service.version_of(session, workflow)
    definition = runner.definition_of(version)
    resolved, errors = dsl.validate_params(definition, params or {})
    errors = list(errors) + unknown_queues(definition, dispatcher.queues)
    if errors:
        raise ValidationFailed("The run cannot start", errors)
    # Lock the workflow so concurrent starts agree on max_active_runs.
    session.execute(select(Workflow.id).where(Workflow.id == workflow.id).with_for_update())
    starts = below_limit(session, workflow.id, definition.max_active_runs)
    run = Run(
        workflow_id=workflow.id, version_id=version.id, workflow_version=version.version,
        team_id=workflow.team_id, params=resolved, trigger=trigger,
        idempotency_key=idempotency_key, created_by=actor.username,
    )
    sends = runner.open_run(session, run, definition, starts)
    # Written now, not at the commit: the audit trail's lock (taken at the commit) is
    # then held for its own rows only.
    session.flush()
    record(session, build_event(
        actor, "start", "run", run.id, team=workflow.team.name,
        tenant=workflow.team.tenant.name,
        after={"workflow": workflow.name, "version": version.version, "trigger": trigger},
    ))
    try:
        session.commit()
    except IntegrityError:  # the same key raced us; the other request's run wins
        session.rollback()
        existing = _by_key(session, workflow.id, idempotency_key or "")
        if existing is None:
            raise
        return existing, False
    dispatcher.send(sends)
    return run, True


def _by_key(session: DbSession, workflow_id: str, key: str) -> Run | None:
    return session.execute(
        select(Run).where(Run.workflow_id == workflow_id, Run.idempotency_key == key)
    ).scalar()


def below_limit(session: DbSession, workflow_id: str, limit: int | None) -> bool:
    return not limit or runner.active_runs(session, workflow_id) < limit


def get_run(session: DbSession, actor: Actor, run_id: str) -> Run:
    run = session.execute(scoped(select(Run), Run, actor).where(Run.id == run_id)).scalar()
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


def run_dict(session: DbSession, run: Run, with_tasks: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": run.id,
        "workflow_id": run.workflow_id,
        "workflow": run.workflow.name,
        "workflow_version": run.workflow_version,
        "team": run.team.name,
        "status": run.status,
        "params": run.params,
        "trigger": run.trigger,
        "idempotency_key": run.idempotency_key,
        "created_by": run.created_by,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
    }
    if with_tasks:
        out["tasks"] = [_task_dict(session, t) for t in run.tasks if t.kind == "task"]
        # The undo steps that ran because the run failed, in the order they ran.
        out["compensations"] = [
            _task_dict(session, t) for t in run.tasks if t.kind == "compensation"
        ]
    return out


def _task_dict(session: DbSession, task: TaskRun) -> dict[str, Any]:
    attempts = session.execute(
        select(TaskAttempt).where(TaskAttempt.task_run_id == task.id)
        .order_by(TaskAttempt.created_at, TaskAttempt.number, TaskAttempt.id)
    ).scalars()
    return {
        "task_id": task.task_id,
        "status": task.status,
        "attempts": task.attempts,
        "output": task.output,
        "error": task.error,
        "started_at": _iso(task.started_at),
        "finished_at": _iso(task.finished_at),
        "items": [
            {"index": i.index, "status": i.status, "attempts": i.attempts, "output": i.output,
             "error": i.error}
            for i in session.execute(
                select(TaskItem).where(TaskItem.task_run_id == task.id).order_by(TaskItem.index)
            ).scalars()
        ],
        "attempt_history": [
            {"id": a.id, "number": a.number, "status": a.status, "error": a.error,
             "item": a.item.index if a.item is not None else None,
             "worker": a.worker, "started_at": _iso(a.started_at),
             "finished_at": _iso(a.finished_at)}
            for a in attempts
        ],
    }


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()


CONTROLS = {
    "cancel": controls.cancel, "pause": controls.pause, "resume": controls.resume,
    "retry": controls.retry,
}


def _event(actor: Actor, action: str, run: Run, before: str, **after: Any) -> dict[str, Any]:
    return build_event(
        actor, action, "run", run.id, team=run.team.name, tenant=run.team.tenant.name,
        before={"status": before}, after={"status": run.status, **after},
    )


def control(
    session: DbSession, actor: Actor, dispatcher: Dispatcher, run_id: str, action: str
) -> Run:
    """cancel | pause | resume | retry (API.md, "Runs"); Operators and Authors of the team."""
    run = get_run(session, actor, run_id)
    _require_operator(actor, run.team_id)
    before = run.status
    result = CONTROLS[action](session, run.id)
    record(session, _event(actor, action, result.run, before))
    session.commit()
    dispatcher.stop(result.stop)
    dispatcher.send(result.sends)
    if action == "cancel":
        # Sub-workflow runs go with their parent, each in its own transaction.
        for child_id in subruns.live_children(session, run.id):
            control(session, actor, dispatcher, child_id, "cancel")
    return result.run


def answer_approval(
    session: DbSession, actor: Actor, dispatcher: Dispatcher, run_id: str, task_id: str,
    approve: bool, comment: Any,
) -> Run:
    run = get_run(session, actor, run_id)
    _require_operator(actor, run.team_id)
    if comment is not None and not isinstance(comment, str):
        raise ValidationFailed("comment must be text",
                               [{"path": "comment", "message": "expected a string"}])
    before = run.status
    result = controls.answer_approval(
        session, run.id, task_id, actor.username, actor.roles, approve, comment or ""
    )
    action = "approve" if approve else "reject"
    record(session, _event(actor, action, result.run, before, task=task_id,
                           comment=comment or ""))
    session.commit()
    dispatcher.send(result.sends)
    return result.run
