"""Export and import bundles (AGENTS.md, "Export/import"): one workflow's current
definition, its triggers and the connections it needs, as YAML, with the SHA-256 of
its content.

A bundle never holds a secret: webhooks travel without their token (an import makes a
new one, shown once in its answer), signing secrets and connections by name only.
An import is all or nothing as far as checks go: the bundle's checksum, its fields,
the definition and every trigger are checked before anything is written; a later
failure (a race with another save) removes what the import had created.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from app.audit.recorder import build_event, record
from app.errors import Conflict, ValidationFailed, parse
from app.extensions import DbSession
from app.security.actor import Actor
from capability import dsl, service
from capability.connections.models import Connection
from capability.models import Secret, Workflow
from capability.templates.service import CONNECTION_TYPES, _used_connections
from capability.triggers import events, webhooks
from capability.triggers import service as schedules
from capability.triggers.models import Schedule, Webhook

FORMAT = "apg-workflow-bundle/v1"
SECRET_NAME = re.compile(r"\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)")


# -- the bundle's shape (unknown fields are refused everywhere) ------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkflowPart(_Strict):
    name: str
    description: str = ""
    version: int | None = None
    definition: dict[str, Any]


class SchedulePart(_Strict):
    cron: str
    timezone: str = "UTC"
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    start_at: dt.datetime | None = None
    end_at: dt.datetime | None = None
    catchup: Literal["none", "latest", "all"] = "latest"
    catchup_window: str = "1d"
    overlap: Literal["allow", "skip", "buffer_one", "cancel_other"] = "skip"
    jitter: str = "0s"
    dst: schedules.DstIn = Field(default_factory=schedules.DstIn)
    description: str = ""


class WebhookPart(_Strict):
    name: str
    enabled: bool = True
    signature: webhooks.SignatureIn = Field(default_factory=webhooks.SignatureIn)
    params: dict[str, Any] = Field(default_factory=dict)
    filter: str | None = None


class EventOn(_Strict):
    workflow: str | None = None  # a workflow of the same team, by name
    statuses: list[str] = Field(default_factory=lambda: ["succeeded"])
    event: str | None = None


class EventPart(_Strict):
    on: EventOn
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class TriggersPart(_Strict):
    schedules: list[SchedulePart] = Field(default_factory=list)
    webhooks: list[WebhookPart] = Field(default_factory=list)
    events: list[EventPart] = Field(default_factory=list)


class ConnectionPart(_Strict):
    name: str
    type: str


class Bundle(_Strict):
    format: Literal["apg-workflow-bundle/v1"]
    exported_at: str | None = None
    workflow: WorkflowPart
    triggers: TriggersPart = Field(default_factory=TriggersPart)
    connections: list[ConnectionPart] = Field(default_factory=list)
    secrets: list[str] = Field(default_factory=list)
    checksum: str


class ImportIn(_Strict):
    """The body of ``POST /api/v1/workflows/import``."""

    team: str = Field(min_length=1, max_length=service.MAX_TEAM)
    bundle: Any = Field(description="the bundle: YAML text, or the same as an object")
    on_conflict: Literal["new_version", "rename", "fail"] = "fail"


def checksum(content: dict[str, Any]) -> str:
    """SHA-256 of the bundle without its checksum, over canonical JSON (sorted keys, no
    spaces): the same content gives the same sum whether it travelled as YAML or JSON."""
    body = {k: v for k, v in content.items() if k != "checksum"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# -- export ----------------------------------------------------------------------------

def _schedule(s: Schedule) -> dict[str, Any]:
    return {"cron": s.cron, "timezone": s.timezone, "params": s.params, "enabled": s.enabled,
            "start_at": s.start_at.isoformat() if s.start_at else None,
            "end_at": s.end_at.isoformat() if s.end_at else None, "catchup": s.catchup,
            "catchup_window": s.catchup_window, "overlap": s.overlap, "jitter": s.jitter,
            "dst": {"missing": s.dst_missing, "repeated": s.dst_repeated},
            "description": s.description}


def _webhook(w: Webhook) -> dict[str, Any]:
    # No token, no token hash: the importing team gets a new token.
    return {"name": w.name, "enabled": w.enabled,
            "signature": {"scheme": w.scheme, "secret": w.secret_name,
                          "tolerance": w.tolerance, "header": w.header, "prefix": w.prefix,
                          "encoding": w.encoding},
            "params": w.params, "filter": w.filter}


def export_bundle(session: DbSession, actor: Actor, workflow_id: str) -> dict[str, Any]:
    """The bundle of a workflow the actor may read, as a dict (``to_yaml`` writes it)."""
    version = service.get_version(session, actor, workflow_id)
    workflow = version.workflow
    found = schedules.of_workflow(session, workflow.id)
    names = {w.id: w.name for w in session.execute(select(Workflow).where(
        Workflow.team_id == workflow.team_id)).scalars()}
    event_parts = []
    for e in found["events"]:
        on: dict[str, Any] = ({"workflow": names.get(e.on_workflow_id or ""),
                               "statuses": e.on_statuses} if e.on_workflow_id
                              else {"event": e.on_event})
        event_parts.append({"on": on, "params": e.params, "enabled": e.enabled})
    used = _used_connections(version.definition)
    known = {c.name: c.type for c in session.execute(select(Connection).where(
        Connection.team_id == workflow.team_id, Connection.name.in_(list(used)))).scalars()}
    connections = [{"name": n, "type": known.get(n) or sorted(
        CONNECTION_TYPES.get(t, frozenset({t})))[0]} for n, t in sorted(used.items())]
    webhook_rows = list(found["webhooks"])
    secret_names = set(SECRET_NAME.findall(json.dumps(version.definition)))
    secret_names |= {w.secret_name for w in webhook_rows if w.secret_name}
    content: dict[str, Any] = {
        "format": FORMAT,
        "exported_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "workflow": {"name": workflow.name, "description": workflow.description,
                     "version": version.version, "definition": version.definition},
        "triggers": {"schedules": [_schedule(s) for s in session.execute(
                         select(Schedule).where(Schedule.workflow_id == workflow.id)
                         .order_by(Schedule.created_at)).scalars()],
                     "webhooks": [_webhook(w) for w in webhook_rows],
                     "events": event_parts},
        "connections": connections,
        "secrets": sorted(secret_names),  # names only: the importing team must have them
    }
    # Round-tripped through JSON: the sum is over what a reader of the YAML will see.
    content = json.loads(json.dumps(content, default=str))
    content["checksum"] = checksum(content)
    return content


def to_yaml(bundle: dict[str, Any]) -> str:
    return yaml.safe_dump(bundle, sort_keys=False, allow_unicode=True, width=100)


# -- import ----------------------------------------------------------------------------

def _read(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            raw = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ValidationFailed("The bundle is not valid YAML", [
                {"path": "bundle", "message": f"invalid YAML: {exc}"[:300]}]) from exc
    if not isinstance(raw, dict):
        raise ValidationFailed("Invalid bundle", [
            {"path": "bundle", "message": "expected a bundle: YAML text or an object"}])
    return raw


def _prefixed(prefix: str, errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "path": f"{prefix}.{e['path']}" if e.get("path") not in (None, "", "$")
             else prefix} for e in errors]


def _free_name(session: DbSession, team_id: str, name: str) -> str:
    taken = set(session.execute(select(Workflow.name).where(
        Workflow.team_id == team_id, Workflow.deleted_at.is_(None))).scalars())
    if name not in taken:
        return name
    stem = name[:58]
    return next(f"{stem}-{n}" for n in range(2, 10_000) if f"{stem}-{n}" not in taken)


def _check_triggers(session: DbSession, bundle: Bundle, team_id: str, name: str,
                    definition: dsl.WorkflowDefinition) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    # The trigger services' own bodies, with a stand-in workflow id: their field rules
    # (names, event names, statuses, UTC offsets) are checked before anything is made.
    for kind, parts, model in (("schedules", bundle.triggers.schedules, schedules.ScheduleIn),
                               ("webhooks", bundle.triggers.webhooks, webhooks.WebhookIn)):
        for i, part in enumerate(parts):
            try:
                parse(model, {"workflow_id": "-", **part.model_dump()})
            except ValidationFailed as exc:
                errors += _prefixed(f"bundle.triggers.{kind}[{i}]", exc.errors)
    for i, e in enumerate(bundle.triggers.events):
        on = ({"workflow_id": "-", "statuses": e.on.statuses} if e.on.workflow is not None
              else {"event": e.on.event})
        try:
            parse(events.OnIn, on)
        except ValidationFailed as exc:
            errors += _prefixed(f"bundle.triggers.events[{i}].on", exc.errors)
    for i, s in enumerate(bundle.triggers.schedules):
        path = f"bundle.triggers.schedules[{i}]"
        errors += _prefixed(path, schedules._timing_errors(
            s.cron, s.timezone, catchup_window=s.catchup_window, jitter=s.jitter))
        _, bad = dsl.validate_params(definition, s.params)
        errors += _prefixed(f"{path}.params", bad)
    secrets = set(session.execute(select(Secret.name).where(
        Secret.team_id == team_id)).scalars())
    for i, w in enumerate(bundle.triggers.webhooks):
        if w.signature.scheme != "none" and w.signature.secret not in secrets:
            errors.append({"path": f"bundle.triggers.webhooks[{i}].signature.secret",
                           "message": f"the team has no secret named {w.signature.secret!r}"})
    names = set(session.execute(select(Workflow.name).where(
        Workflow.team_id == team_id, Workflow.deleted_at.is_(None))).scalars()) | {name}
    for i, e in enumerate(bundle.triggers.events):
        if e.on.workflow is not None and e.on.workflow not in names:
            errors.append({"path": f"bundle.triggers.events[{i}].on.workflow",
                           "message": f"the team has no workflow named {e.on.workflow!r}"})
    return errors


def import_bundle(session: DbSession, actor: Actor, body: ImportIn) -> dict[str, Any]:
    raw = _read(body.bundle)
    try:
        bundle = parse(Bundle, raw)
    except ValidationFailed as exc:
        raise ValidationFailed("Invalid bundle", _prefixed("bundle", exc.errors)) from exc
    if checksum(raw) != bundle.checksum:
        raise ValidationFailed("The bundle was changed after its export", [
            {"path": "bundle.checksum",
             "message": "does not match the content (SHA-256): the bundle was changed"}])
    team = service.team_by_name(session, actor, body.team)
    service.require_author(actor, team.id)
    data = dict(bundle.workflow.definition)
    existing = session.execute(select(Workflow).where(
        Workflow.team_id == team.id, Workflow.name == data.get("name"),
        Workflow.deleted_at.is_(None))).scalar()
    mode = "create"
    if existing is not None:
        if body.on_conflict == "fail":
            raise Conflict(f"This team already has a workflow named {data.get('name')!r}",
                           [{"path": "bundle.workflow.definition.name",
                             "message": "already exists in this team (on_conflict: fail)"}])
        mode = body.on_conflict
        if mode == "rename":
            data["name"] = _free_name(session, team.id, str(data["name"]))
    source = service.read_source(yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                                 "yaml")
    try:
        definition = service.check_definition(source)
    except ValidationFailed as exc:
        raise ValidationFailed(exc.message, _prefixed("bundle.workflow.definition",
                                                      exc.errors)) from exc
    # Triggers come with a new workflow only: a new version keeps the triggers it has.
    with_triggers = mode != "new_version"
    errors = _check_triggers(session, bundle, team.id, definition.name, definition) \
        if with_triggers else []
    if errors:
        raise ValidationFailed("Invalid bundle", errors)
    if mode == "new_version" and existing is not None:
        workflow = service.update_workflow(session, actor, existing.id, source)
    else:
        workflow = service.create_workflow(session, actor, body.team, source)
    tokens = _create_triggers(session, actor, bundle, workflow) if with_triggers else []
    missing = sorted({c.name for c in bundle.connections} - set(session.execute(
        select(Connection.name).where(Connection.team_id == team.id)).scalars()))
    record(session, build_event(actor, "import", "workflow", workflow.id, team=team.name,
                                tenant=team.tenant.name, after={
                                    "mode": mode, "name": workflow.name,
                                    "checksum": bundle.checksum,
                                    "version": workflow.current_version}))
    session.commit()
    version = service.get_version(session, actor, workflow.id)
    return {"mode": mode, "workflow": service.workflow_dict(workflow, version),
            "webhooks": tokens, "missing_connections": missing,
            "missing_secrets": sorted(set(bundle.secrets) - set(session.execute(
                select(Secret.name).where(Secret.team_id == team.id)).scalars())),
            "triggers_skipped": not with_triggers and any(
                [bundle.triggers.schedules, bundle.triggers.webhooks, bundle.triggers.events])}


def _create_triggers(session: DbSession, actor: Actor, bundle: Bundle,
                     workflow: Workflow) -> list[dict[str, Any]]:
    """Each trigger through its own service (its checks, its audit). One that fails
    after the checks above (a concurrent change) undoes the whole import."""
    made: list[Any] = []
    tokens = []
    try:
        for s in bundle.triggers.schedules:
            made.append(schedules.create_schedule(session, actor, schedules.ScheduleIn(
                workflow_id=workflow.id, **s.model_dump())))
        for w in bundle.triggers.webhooks:
            hook, token = webhooks.create_webhook(session, actor, webhooks.WebhookIn(
                workflow_id=workflow.id, **w.model_dump()))
            made.append(hook)
            tokens.append(webhooks.webhook_dict(hook, token))
        for e in bundle.triggers.events:
            upstream = None
            if e.on.workflow is not None:
                upstream = session.execute(select(Workflow.id).where(
                    Workflow.team_id == workflow.team_id, Workflow.name == e.on.workflow,
                    Workflow.deleted_at.is_(None))).scalar()
            on = ({"workflow_id": upstream, "statuses": e.on.statuses} if upstream
                  else {"event": e.on.event})
            made.append(events.create_trigger(session, actor, events.EventTriggerIn(
                workflow_id=workflow.id, on=events.OnIn(**on), params=e.params,
                enabled=e.enabled)))
    except Exception:
        session.rollback()
        for row in reversed(made):
            session.delete(session.merge(row))
        if workflow.current_version == 1:
            service.delete_workflow(session, actor, workflow.id)
        session.commit()
        raise
    return tokens
