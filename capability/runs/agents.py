"""Agent steps and what an agent reads of a run (AGENTS.md, "Agent steps" and the MCP
tools ``workflow_next``, ``step_complete``, ``step_fail``, ``approval_list``).

Every function takes the acting user and returns plain JSON-able data: the REST API,
the run page and the MCP server call the same functions. Who may answer an agent step:
whoever may control the run (an Operator or Author of its team, or an Admin:
``runs.service.may_operate``). Each answer is audited (``step_complete`` /
``step_fail``, target the run), and so is each refusal, here rather than in the web
layer, since the MCP server calls these too: the REST API answers a refusal without
recording it again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from app.audit.recorder import build_event, record
from app.errors import Forbidden, ServiceError
from app.extensions import DbSession
from app.security.actor import Actor
from app.security.roles import AUTHOR, OPERATOR
from app.security.scope import scoped
from app.times import iso
from capability.dsl import FINISHED_RUN_STATUSES, FINISHED_TASK_STATUSES, RunStatus, TaskStatus
from capability.engine import agents, controls, outbox
from capability.engine.dispatch import Dispatcher
from capability.models import Run, TaskKind, TaskRun
from capability.runs import service as runs

__all__ = ["CompleteIn", "FailIn", "approvals_for", "complete_step", "fail_step", "next_for",
           "step_dict"]

# What ``next_for`` lists as under way.
UNDER_WAY = (TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.RETRYING)
MAX_APPROVALS = 200  # approvals ``approvals_for`` lists, oldest first


class CompleteIn(BaseModel):
    """The body of ``POST /api/v1/runs/<id>/tasks/<task_id>/complete``."""

    model_config = ConfigDict(extra="forbid")

    output: Any = Field(description="the step's output: checked against its output_schema "
                                    "and checks")


class FailIn(BaseModel):
    """The body of ``POST /api/v1/runs/<id>/tasks/<task_id>/fail``."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(min_length=1, max_length=agents.MAX_ERROR, description=(
        "why the step failed: the task's error"))


def _refused(session: DbSession, actor: Actor, action: str, run_id: str, task_id: str,
             exc: ServiceError) -> None:
    """A refused answer, audited as the actor's attempt (nothing else is kept)."""
    session.rollback()
    run = session.execute(scoped(select(Run), Run, actor).where(Run.id == run_id)).scalar()
    record(session, build_event(
        actor, action, "run", run_id,
        outcome="denied" if isinstance(exc, Forbidden) else "error",
        team=run.team.name if run is not None else None,
        tenant=run.team.tenant.name if run is not None else None,
        after={"task": task_id, "message": exc.message, "errors": exc.errors}))
    session.commit()


def _answer(session: DbSession, actor: Actor, dispatcher: Dispatcher, run_id: str,
            task_id: str, action: str, step: Callable[[str], Run],
            **detail: Any) -> dict[str, Any]:
    try:
        run = runs.get_run(session, actor, run_id)
        if not runs.may_operate(actor, run.team_id):
            raise Forbidden(f"Only an {OPERATOR} or {AUTHOR} of the workflow's team may "
                            "answer agent steps")
        before = run.status
        outbox.begin(session, dispatcher)
        try:
            done = step(run.id)
            record(session, build_event(
                actor, action, "run", done.id, team=done.team.name,
                tenant=done.team.tenant.name, before={"status": before},
                after={"status": done.status, "task": task_id, **detail}))
            box = outbox.commit(session, deliver=False)
        except BaseException:
            outbox.rollback(session)
            raise
    except ServiceError as exc:
        _refused(session, actor, action, run_id, task_id, exc)
        raise
    box.deliver(tolerant=True)  # what could not be sent, the reaper sends
    task = next(t for t in done.tasks if t.task_id == task_id and t.kind == TaskKind.TASK)
    return {"run_id": done.id, "task_id": task_id, "status": task.status,
            "error": task.error, "run_status": done.status}


def complete_step(session: DbSession, actor: Actor, dispatcher: Dispatcher, run_id: str,
                  task_id: str, output: Any) -> dict[str, Any]:
    """Submit the output of an agent step waiting for it. Refused (``ValidationFailed``,
    422: every violation with its path) when it breaks the step's schema or a check: the
    step keeps waiting. ``Conflict`` (409) when the task is not waiting for input."""
    limit = dispatcher.settings.output_max_bytes
    return _answer(session, actor, dispatcher, run_id, task_id, "step_complete",
                   lambda rid: agents.complete_step(session, rid, task_id, output, limit))


def fail_step(session: DbSession, actor: Actor, dispatcher: Dispatcher, run_id: str,
              task_id: str, error: str) -> dict[str, Any]:
    """Fail an agent step waiting for its output, with ``error`` (not retried)."""
    return _answer(session, actor, dispatcher, run_id, task_id, "step_fail",
                   lambda rid: agents.fail_step(session, rid, task_id, error), error=error)


def step_dict(task: TaskRun) -> dict[str, Any]:
    """A waiting agent step as an agent is given it: rendered when it began to wait."""
    prompt = task.prompt or {}
    return {"task_id": task.task_id, "instructions": prompt.get("instructions"),
            "inputs": prompt.get("inputs") or {},
            "output_schema": prompt.get("output_schema") or {},
            "model_hint": prompt.get("model_hint"), "checks": prompt.get("checks") or [],
            "waiting_since": iso(task.started_at)}


def _approval_dict(task: TaskRun) -> dict[str, Any]:
    return {"task_id": task.task_id,
            "message": (task.prompt or {}).get("message"),
            "approvers": controls.approvers_of(task),
            "waiting_since": iso(task.started_at)}


def _may_answer_approval(actor: Actor, run: Run, task: TaskRun) -> bool:
    return (runs.may_operate(actor, run.team_id)
            and controls.may_answer(actor.roles, controls.approvers_of(task)))


def next_for(session: DbSession, actor: Actor, run_id: str) -> dict[str, Any]:
    """What an agent does next in a run (MCP ``workflow_next``): the run's progress, the
    agent steps waiting that the actor may complete (rendered), the approvals waiting
    that the actor may answer, what else is under way, and ``done`` once the run ended.
    Another team's run: ``NotFound``."""
    run = runs.get_run(session, actor, run_id)
    session.refresh(run)  # an agent polls: the newest state, not one read earlier
    tasks = [t for t in run.tasks if t.kind == TaskKind.TASK]
    tasks.sort(key=lambda t: t.position)
    may = runs.may_operate(actor, run.team_id)
    return {
        "run_id": run.id,
        "workflow": run.workflow.name,
        "status": run.status,
        "progress": {"done": sum(t.status in FINISHED_TASK_STATUSES for t in tasks),
                     "total": len(tasks)},
        "steps": [step_dict(t) for t in tasks
                  if may and t.status == TaskStatus.WAITING_INPUT],
        "approvals": [_approval_dict(t) for t in tasks
                      if t.status == TaskStatus.WAITING_APPROVAL
                      and _may_answer_approval(actor, run, t)],
        "running": [t.task_id for t in tasks if t.status in UNDER_WAY],
        "done": run.status in FINISHED_RUN_STATUSES,
    }


def approvals_for(session: DbSession, actor: Actor,
                  limit: int = MAX_APPROVALS) -> list[dict[str, Any]]:
    """The approvals waiting in the actor's teams' live runs that the actor may answer
    (MCP ``approval_list``), oldest first: ``{run_id, workflow, team, task_id, message,
    approvers, waiting_since}``."""
    base: Any = select(TaskRun, Run).join(Run, TaskRun.run_id == Run.id)
    stmt = (scoped(base, Run, actor)
            .where(TaskRun.status == TaskStatus.WAITING_APPROVAL.value,
                   TaskRun.kind == TaskKind.TASK,
                   Run.status.in_((RunStatus.RUNNING.value, RunStatus.PAUSED.value)))
            .order_by(TaskRun.started_at, TaskRun.id))
    found = []
    for task, run in session.execute(stmt).all():
        if not _may_answer_approval(actor, run, task):
            continue
        found.append({"run_id": run.id, "workflow": run.workflow.name, "team": run.team.name,
                      **_approval_dict(task)})
        if len(found) >= limit:
            break
    return found
