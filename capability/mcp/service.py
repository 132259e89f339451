"""Reads the MCP tools need beyond the workflow and run services: a page of workflows
with a cursor, a workflow by id or name, the JSON Schema of a workflow's params, its
triggers, and a run's progress. Every function takes the acting user and sees only
what the user's teams (narrowed by the key) let them see."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from sqlalchemy import Select, func, or_, select, tuple_

from app.errors import NotFound, ValidationFailed
from app.extensions import DbSession
from app.security.actor import Actor
from app.security.scope import scoped
from capability import dsl, service
from capability.models import Run, Workflow, WorkflowVersion
from capability.runs import service as runs

PAGE = 50
# A workflow is named by its id, its name, or ``team/name`` (``tenant/team/name``).
ID_LENGTH = 36


def _cursor(workflow: Workflow) -> str:
    raw = json.dumps([workflow.name, workflow.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, wid = json.loads(raw)
        if isinstance(name, str) and isinstance(wid, str):
            return name, wid
    except (binascii.Error, ValueError, TypeError):
        pass
    raise ValidationFailed("Invalid cursor", [
        {"path": "cursor", "message": "not a cursor this server gave out"}])


def _live(actor: Actor) -> Select[Any]:
    current = (WorkflowVersion.workflow_id == Workflow.id) & (
        WorkflowVersion.version == Workflow.current_version)
    return (scoped(select(Workflow, WorkflowVersion.definition), Workflow, actor)
            .join(WorkflowVersion, current).where(Workflow.deleted_at.is_(None)))


def workflow_page(session: DbSession, actor: Actor, query: str | None = None,
                  team: str | None = None, cursor: str | None = None,
                  limit: int = PAGE) -> dict[str, Any]:
    """``{workflows, next_cursor}``: workflows by name, ``limit`` at a time; ``query``
    matches the name or the description, ``team`` a team (``name`` or ``tenant/name``)."""
    stmt = _live(actor)
    if team:
        stmt = stmt.where(Workflow.team_id == service.team_by_name(session, actor, team).id)
    if query:
        pattern = f"%{query.lower()}%"
        stmt = stmt.where(or_(func.lower(Workflow.name).like(pattern),
                              func.lower(Workflow.description).like(pattern)))
    if cursor:
        stmt = stmt.where(tuple_(Workflow.name, Workflow.id) > _after(cursor))
    rows = session.execute(stmt.order_by(Workflow.name, Workflow.id).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "workflows": [summary(workflow, definition) for workflow, definition in rows],
        "next_cursor": _cursor(rows[-1][0]) if more and rows else None,
    }


def summary(workflow: Workflow, definition: Any) -> dict[str, Any]:
    params = definition.get("params") if isinstance(definition, dict) else None
    return {
        "id": workflow.id,
        "name": workflow.name,
        "team": workflow.team.name,
        "version": workflow.current_version,
        "description": workflow.description,
        "params": params if isinstance(params, dict) else {},
    }


def find_workflow(session: DbSession, actor: Actor, ref: str) -> Workflow:
    """A visible workflow by id, name, or ``team/name``; a name several visible teams
    use is refused (write it with its team)."""
    if len(ref) == ID_LENGTH:
        found = session.execute(_live(actor).where(Workflow.id == ref)).first()
        if found is not None:
            return found[0]
    team, _, name = ref.rpartition("/")
    stmt = _live(actor).where(Workflow.name == name)
    if team:
        try:
            stmt = stmt.where(Workflow.team_id == service.team_by_name(session, actor, team).id)
        except ValidationFailed as exc:  # an unknown team: the workflow is not found
            raise NotFound(f"workflow {ref!r} not found") from exc
    rows = session.execute(stmt.limit(2)).all()
    if not rows:
        raise NotFound(f"workflow {ref!r} not found")
    if len(rows) > 1:
        raise ValidationFailed(f"Several teams have a workflow named {name!r}", [
            {"path": "workflow", "message": "ambiguous: write it as team/name or use its id"}])
    return rows[0][0]


def params_schema(definition: dsl.WorkflowDefinition) -> dict[str, Any]:
    """The run inputs as a JSON Schema object (what ``run_start``'s ``params`` takes)."""
    properties: dict[str, Any] = {}
    required = []
    for name, spec in definition.params.items():
        prop: dict[str, Any] = {"type": spec.type}
        if spec.description:
            prop["description"] = spec.description
        if spec.enum is not None:
            prop["enum"] = spec.enum
        if spec.default is not None:
            prop["default"] = spec.default
        elif spec.required:
            required.append(name)
        properties[name] = prop
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False}


def workflow_detail(session: DbSession, actor: Actor, ref: str) -> dict[str, Any]:
    """A workflow's current definition, version, params schema and triggers."""
    from capability.triggers import events, webhooks
    from capability.triggers import service as schedules

    workflow = find_workflow(session, actor, ref)
    version = service.version_of(session, workflow)
    definition = dsl.validate_definition(version.definition).definition
    triggers = schedules.of_workflow(session, workflow.id)
    return {
        **summary(workflow, version.definition),
        "tenant": workflow.team.tenant.name,
        "definition": version.definition,
        "source_format": version.source_format,
        "params_schema": params_schema(definition) if definition is not None else None,
        "triggers": {
            "schedules": triggers["schedules"],
            "webhooks": [webhooks.webhook_dict(w) for w in triggers["webhooks"]],
            "events": [events.trigger_dict(t) for t in triggers["events"]],
        },
    }


def validation(definition: Any) -> dict[str, Any]:
    """``{valid, errors: [{path, line?, message}]}`` of a definition (object or text)."""
    try:
        service.check_definition(service.read_source(definition))
    except ValidationFailed as exc:
        return {"valid": False, "errors": exc.errors}
    return {"valid": True, "errors": []}


def save(session: DbSession, actor: Actor, team: str, definition: Any) -> tuple[Workflow, bool]:
    """Create the workflow, or add a version to the team's workflow of that name.
    Returns ``(workflow, created)``."""
    source = service.read_source(definition)
    name = source.data.get("name") if isinstance(source.data, dict) else None
    if isinstance(name, str):
        owner = service.team_by_name(session, actor, team)
        existing = session.execute(_live(actor).where(
            Workflow.team_id == owner.id, Workflow.name == name)).first()
        if existing is not None:
            return service.update_workflow(session, actor, existing[0].id, source), False
    return service.create_workflow(session, actor, team, source), True


def run_status(session: DbSession, actor: Actor, run_id: str, outputs: bool = False,
               max_value: int | None = None) -> dict[str, Any]:
    """A run's status, progress ``{done, total}``, its tasks with status and error,
    and (``outputs``) each task's output."""
    run = runs.get_run(session, actor, run_id)
    data = runs.run_dict(session, run, actor, max_value=max_value)
    finished = {s.value for s in dsl.FINISHED_TASK_STATUSES}
    tasks = data["tasks"]
    out: dict[str, Any] = {
        "run_id": run.id,
        "workflow": data["workflow"],
        "workflow_id": data["workflow_id"],
        "team": data["team"],
        "status": data["status"],
        "progress": {"done": sum(1 for t in tasks if t["status"] in finished),
                     "total": len(tasks)},
        "tasks": [{"task_id": t["task_id"], "status": t["status"], "error": t["error"],
                   "reason": t["reason"]} for t in tasks],
        "created_at": data["created_at"],
        "finished_at": data["finished_at"],
    }
    if outputs:
        out["outputs"] = {t["task_id"]: t["output"] for t in tasks}
    return out


def run_brief(run: Run) -> dict[str, Any]:
    return {"run_id": run.id, "status": str(run.status)}
