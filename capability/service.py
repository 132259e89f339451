"""Workflows and their versions. Every function takes the acting user.

Definitions are validated by ``capability.dsl`` (the public DSL contract); a save that
fails validation raises ``ValidationFailed`` with every error and its path (and, when
the definition came as text, its line), and nothing is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from flask import current_app, has_app_context
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.audit.context import acting_as
from app.audit.recorder import update_action
from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.extensions import DbSession
from app.models import Team, Tenant
from app.security.actor import Actor
from app.security.roles import AUTHOR
from app.security.scope import scoped
from app.times import iso, utcnow
from capability import callables, dsl
from capability.models import Run, Workflow, WorkflowVersion

# A team as ``name`` or ``tenant/name`` (64 characters each).
MAX_TEAM = 129
DEFINITION = "the definition: an object, or YAML/JSON text"


class DefinitionIn(BaseModel):
    """A definition as a request sends it (``POST /validate``, ``PUT /<id>``)."""

    model_config = ConfigDict(extra="forbid")

    definition: Any = Field(description=DEFINITION)
    format: Literal["yaml", "json"] | None = None


class WorkflowIn(DefinitionIn):
    """The body of ``POST /api/v1/workflows/``."""

    team: str = Field(min_length=1, max_length=MAX_TEAM)


class RollbackIn(BaseModel):
    """The body of ``POST /api/v1/workflows/<id>/rollback``."""

    model_config = ConfigDict(extra="forbid")

    version: StrictInt = Field(ge=1, description="the version to copy")


@dataclass(frozen=True)
class Source:
    """A definition as the author sent it: an object, or YAML/JSON text."""

    data: Any
    text: str
    fmt: str
    as_text: bool = False  # sent as YAML/JSON text: its errors get their line


def read_source(definition: Any, fmt: str | None = None) -> Source:
    if isinstance(definition, str):
        data, errors = dsl.parse_source(definition, fmt)
        if errors:
            raise ValidationFailed("The definition is not valid YAML or JSON", errors)
        return Source(data, definition, fmt or _detect(definition), as_text=True)
    if isinstance(definition, dict):
        return Source(definition, json.dumps(definition, indent=2, sort_keys=False), "json")
    raise ValidationFailed(
        "The definition must be an object or YAML/JSON text",
        [{"path": "definition", "message": "expected an object or a string"}],
    )


def _detect(text: str) -> str:
    try:
        json.loads(text)
    except ValueError:
        return "yaml"
    return "json"


# Errors about request fields rather than the definition text: no line to point at.
FORM_FIELDS = frozenset({"team", "definition", "format"})


def with_lines(text: str, errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Errors with the line of the definition text each one is about (``None`` when it
    is about no line); an error that has its line already keeps it."""
    def wanted(error: dict[str, Any]) -> bool:
        return "line" not in error and error.get("path") not in FORM_FIELDS

    lines = iter(dsl.locate_issues(text, [e for e in errors if wanted(e)]))
    return [next(lines) if wanted(e) else {"line": None, **e} for e in errors]


def check_definition(source: Source) -> dsl.WorkflowDefinition:
    """The parsed definition, or ``ValidationFailed`` with every error (with its line
    when the definition came as text)."""
    result = dsl.validate_definition(source.data)
    errors = list(result.errors)
    if result.definition is not None:
        errors.extend(_callable_issues(result.definition))
    if errors or result.definition is None:
        errors = with_lines(source.text, errors) if source.as_text else errors
        raise ValidationFailed("Invalid workflow definition", errors)
    return result.definition


def _callable_issues(definition: dsl.WorkflowDefinition) -> list[dict[str, Any]]:
    """``python`` callables the allow-list refuses (the rule the workers apply again
    before a call). Only when this process has PYTHON_TASK_PREFIXES: a web without it
    leaves the check to the workers rather than refusing every callable."""
    prefixes = tuple(current_app.config.get("PYTHON_TASK_PREFIXES") or ()) \
        if has_app_context() else ()
    if not prefixes:
        return []
    found = []
    for index, task in enumerate(definition.tasks):
        for path, spec in ((f"tasks[{index}]", task), (f"tasks[{index}].compensate",
                                                         task.compensate)):
            if spec is None or spec.type != "python":
                continue
            problem = callables.check(str(spec.with_.get("callable", "")), prefixes)
            if problem:
                found.append({"path": f"{path}.with.callable", "message": problem})
    return found


def require_author(actor: Actor, team_id: str) -> None:
    if actor.is_admin:
        return
    if AUTHOR not in actor.roles or team_id not in actor.team_ids:
        raise Forbidden("Only an Author of the workflow's team may change it")


def team_by_name(session: DbSession, actor: Actor, name: str) -> Team:
    """A team the actor can see, by ``name`` or ``tenant/name``."""
    tenant, _, team_name = name.rpartition("/")
    stmt = scoped(select(Team).join(Tenant), Team, actor).where(Team.name == team_name)
    if tenant:
        stmt = stmt.where(Tenant.name == tenant)
    teams = list(session.execute(stmt).scalars().unique())
    if not teams:
        raise ValidationFailed(
            f"No team named {name!r}", [{"path": "team", "message": "unknown team"}]
        )
    if len(teams) > 1:
        raise ValidationFailed(
            f"Several tenants have a team named {name!r}",
            [{"path": "team", "message": "ambiguous: write it as tenant/team"}],
        )
    return teams[0]


def _live(actor: Actor) -> Any:
    return scoped(select(Workflow), Workflow, actor).where(Workflow.deleted_at.is_(None))


def _name_taken(session: DbSession, team_id: str, name: str, except_id: str | None = None) -> bool:
    stmt = select(Workflow.id).where(
        Workflow.team_id == team_id, Workflow.name == name, Workflow.deleted_at.is_(None)
    )
    if except_id:
        stmt = stmt.where(Workflow.id != except_id)
    return session.execute(stmt).first() is not None


def _name_conflict(name: str) -> Conflict:
    return Conflict(
        f"This team already has a workflow named {name!r}",
        [{"path": "name", "message": "already exists in this team"}],
    )


def _add_version(
    session: DbSession, workflow: Workflow, number: int, definition: dict[str, Any],
    source: Source, actor: Actor, note: str = "",
) -> WorkflowVersion:
    version = WorkflowVersion(
        workflow=workflow, version=number, definition=definition, source=source.text,
        source_format=source.fmt, note=note, created_by=actor.username,
    )
    session.add(version)
    return version


def _commit(session: DbSession, name: str) -> None:
    try:
        session.commit()
    except IntegrityError as exc:  # a concurrent save took the name or the version number
        session.rollback()
        raise _name_conflict(name) from exc


def create_workflow(session: DbSession, actor: Actor, team_name: str, source: Source) -> Workflow:
    team = team_by_name(session, actor, team_name)
    require_author(actor, team.id)
    definition = check_definition(source)
    if _name_taken(session, team.id, definition.name):
        raise _name_conflict(definition.name)
    # Stored as the author wrote it (durations stay "30s"); it is re-validated on use.
    data = source.data
    with acting_as(actor):
        workflow = Workflow(
            team=team, name=definition.name, description=definition.description or "",
            current_version=1, created_by=actor.username,
        )
        session.add(workflow)
        _add_version(session, workflow, 1, data, source, actor)
        _commit(session, definition.name)
    return workflow


def list_workflows(
    session: DbSession, actor: Actor, search: str | None = None
) -> list[Workflow]:
    stmt = _live(actor).order_by(Workflow.name)
    if search:
        stmt = stmt.where(func.lower(Workflow.name).contains(search.lower()))
    return list(session.execute(stmt).scalars().unique())


def get_workflow(session: DbSession, actor: Actor, workflow_id: str) -> Workflow:
    workflow = session.execute(_live(actor).where(Workflow.id == workflow_id)).scalar()
    if workflow is None:
        raise NotFound(f"workflow {workflow_id} not found")
    return workflow


def get_version(
    session: DbSession, actor: Actor, workflow_id: str, number: int | None = None
) -> WorkflowVersion:
    return version_of(session, get_workflow(session, actor, workflow_id), number)


def version_of(session: DbSession, workflow: Workflow, number: int | None = None
               ) -> WorkflowVersion:
    """Version ``number`` (default: the current one) of a workflow the caller may see."""
    wanted = workflow.current_version if number is None else number
    version = session.execute(
        select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == workflow.id, WorkflowVersion.version == wanted
        )
    ).scalar()
    if version is None:
        raise NotFound(f"version {wanted} of workflow {workflow.id} not found")
    return version


def list_versions(session: DbSession, actor: Actor, workflow_id: str) -> list[WorkflowVersion]:
    workflow = get_workflow(session, actor, workflow_id)
    return list(session.execute(
        select(WorkflowVersion).where(WorkflowVersion.workflow_id == workflow.id)
        .order_by(WorkflowVersion.version.desc())
    ).scalars())


def _new_version(
    session: DbSession, actor: Actor, workflow: Workflow, definition: dsl.WorkflowDefinition,
    source: Source, action: str, note: str = "",
) -> Workflow:
    if definition.name != workflow.name and _name_taken(
        session, workflow.team_id, definition.name, except_id=workflow.id
    ):
        raise _name_conflict(definition.name)
    data = source.data
    with acting_as(actor), update_action(action):
        number = workflow.current_version + 1
        workflow.name = definition.name
        workflow.description = definition.description or ""
        workflow.current_version = number
        workflow.updated_at = utcnow()
        _add_version(session, workflow, number, data, source, actor, note)
        _commit(session, definition.name)
    return workflow


def update_workflow(session: DbSession, actor: Actor, workflow_id: str, source: Source) -> Workflow:
    workflow = get_workflow(session, actor, workflow_id)
    require_author(actor, workflow.team_id)
    definition = check_definition(source)
    return _new_version(session, actor, workflow, definition, source, "update")


def rollback(session: DbSession, actor: Actor, workflow_id: str, body: RollbackIn) -> Workflow:
    workflow = get_workflow(session, actor, workflow_id)
    require_author(actor, workflow.team_id)
    number = body.version
    try:
        target = get_version(session, actor, workflow_id, number)
    except NotFound as exc:
        raise ValidationFailed(
            f"Workflow has no version {number}",
            [{"path": "version",
              "message": f"no such version (latest is {workflow.current_version})"}],
        ) from exc
    source = Source(target.definition, target.source, target.source_format)
    # The old definition is re-checked: task types or rules may have changed since.
    definition = check_definition(source)
    return _new_version(
        session, actor, workflow, definition, source, "rollback", note=f"rollback to v{number}"
    )


def delete_workflow(session: DbSession, actor: Actor, workflow_id: str) -> None:
    """Soft delete: the workflow disappears from lists, its versions and runs stay."""
    workflow = get_workflow(session, actor, workflow_id)
    require_author(actor, workflow.team_id)
    with acting_as(actor), update_action("delete"):
        workflow.deleted_at = utcnow()
        session.commit()


def workflow_dict(workflow: Workflow, version: WorkflowVersion | None = None) -> dict[str, Any]:
    out = {
        "id": workflow.id,
        "name": workflow.name,
        "description": workflow.description,
        "team": workflow.team.name,
        "tenant": workflow.team.tenant.name,
        "version": workflow.current_version,
        "created_by": workflow.created_by,
        "created_at": iso(workflow.created_at),
        "updated_at": iso(workflow.updated_at),
    }
    if version is not None:
        out["definition"] = version.definition
        out["source"] = version.source
        out["source_format"] = version.source_format
    return out


def workflow_cost(session: DbSession, workflow_id: str) -> float | None:
    """CONNECTORS.md: what the workflow's runs cost, summed (null when none had a cost)."""
    total = session.execute(select(func.sum(Run.cost)).where(
        Run.workflow_id == workflow_id)).scalar()
    return round(float(total), 8) if total is not None else None


def version_dict(version: WorkflowVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "created_by": version.created_by,
        "created_at": iso(version.created_at),
        "note": version.note,
        "definition": version.definition,
    }
