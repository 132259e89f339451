"""The template library (AGENTS.md, "Templates"): read-only YAML files shipped in
``library/``, and their use, which creates a workflow through the workflow service
(same validation, audit, team scope and Author rule as ``POST /api/v1/workflows/``).

Every function takes the acting user and returns plain JSON-able dicts: the REST API,
the pages and the MCP server (``template_list``, ``template_use``) call the same ones.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from app.errors import NotFound, ValidationFailed
from app.extensions import DbSession
from app.security.actor import Actor
from capability import service

LIBRARY = Path(__file__).resolve().parent / "library"
# Category id -> label, in the gallery's order. A template names one of these.
CATEGORIES: dict[str, str] = {
    "data-sync": "Data sync",
    "etl-postgres": "ETL into PostgreSQL",
    "incident-notification": "Incident notification",
    "approval-flows": "Approval flows",
    "email-reports": "Scheduled email reports",
    "webhook-to-chat": "Webhook to chat",
    "s3-housekeeping": "S3 housekeeping",
    "llm": "LLM summarisation and classification",
    "agent-procedures": "Agent-guided procedures",
}
# Which connection type a task type's ``with.connection`` names (``sql``: any database
# type; the template says which one it was written for).
CONNECTION_TYPES: dict[str, frozenset[str]] = {
    "http": frozenset({"http"}), "webhook": frozenset({"http"}),
    "sql": frozenset({"postgres", "mysql", "sqlite"}), "slack": frozenset({"slack"}),
    "teams": frozenset({"teams"}), "email": frozenset({"smtp"}), "s3": frozenset({"s3"}),
    "redis": frozenset({"redis"}), "amqp": frozenset({"amqp"}), "mqtt": frozenset({"mqtt"}),
    "nats": frozenset({"nats"}), "llm": frozenset({"openai"}),
}
FIELDS = ("slug", "title", "category", "description", "params", "connections", "definition")


class ConnectionNeed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63)
    type: str = Field(min_length=1, max_length=63)
    description: str = ""


class TemplateFile(BaseModel):
    """One file of ``library/``: its ``params`` become the definition's ``params``."""

    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    title: str = Field(min_length=1, max_length=120)
    category: str
    description: str = Field(min_length=1)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    connections: list[ConnectionNeed] = Field(default_factory=list)
    definition: dict[str, Any]


class UseIn(BaseModel):
    """The body of ``POST /api/v1/templates/<slug>/use``."""

    model_config = ConfigDict(extra="forbid")

    team: str = Field(min_length=1, max_length=service.MAX_TEAM)
    name: str | None = Field(default=None, min_length=1, max_length=63)
    params_defaults: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Template:
    slug: str
    title: str
    category: str
    description: str
    params: dict[str, dict[str, Any]]
    connections: list[dict[str, str]]
    definition: dict[str, Any]  # with ``params``, ready to save
    source: str  # the definition as YAML, as the editor will show it

    def summary(self) -> dict[str, Any]:
        return {"slug": self.slug, "title": self.title, "category": self.category,
                "category_label": CATEGORIES[self.category],
                "description": self.description,
                "params": copy.deepcopy(self.params),
                "connections": copy.deepcopy(self.connections),
                "tasks": len(self.definition.get("tasks") or [])}

    def full(self) -> dict[str, Any]:
        return {**self.summary(), "definition": copy.deepcopy(self.definition),
                "source": self.source}


def _dump(definition: dict[str, Any]) -> str:
    return yaml.safe_dump(definition, sort_keys=False, allow_unicode=True, width=100)


def _used_connections(definition: dict[str, Any]) -> dict[str, str]:
    """Connection name -> the task type that uses it (literal names only)."""
    used: dict[str, str] = {}
    for task in definition.get("tasks") or []:
        for spec in (task, task.get("compensate") or {}):
            name = (spec.get("with") or {}).get("connection")
            if isinstance(name, str) and "{{" not in name:
                used.setdefault(name, str(spec.get("type")))
    return used


def problems(raw: Any) -> list[dict[str, str]]:
    """Everything wrong with one template file's data (``[]``: fine): its fields, its
    category, its definition (the DSL's validation), and its connections list against
    the connections the tasks name."""
    try:
        data = TemplateFile.model_validate(raw)
    except Exception as exc:  # pydantic's errors, with their paths
        from pydantic import ValidationError

        from app.errors import pydantic_errors

        if isinstance(exc, ValidationError):
            return pydantic_errors(exc)
        raise
    errors: list[dict[str, str]] = []
    if data.category not in CATEGORIES:
        errors.append({"path": "category", "message": f"one of {', '.join(CATEGORIES)}"})
    if "params" in data.definition:
        errors.append({"path": "definition.params",
                       "message": "write the parameters in the template's params"})
    definition = {**data.definition, "params": data.params}
    try:
        service.check_definition(service.Source(definition, "", "yaml"))
    except ValidationFailed as exc:
        errors += [{"path": f"definition.{e['path']}", "message": e["message"]}
                   for e in exc.errors]
    declared = {c.name: c.type for c in data.connections}
    for name, task_type in _used_connections(definition).items():
        allowed = CONNECTION_TYPES.get(task_type, frozenset())
        if name not in declared:
            errors.append({"path": "connections", "message": f"{name!r} is used, not listed"})
        elif allowed and declared[name] not in allowed:
            errors.append({"path": "connections", "message":
                           f"{name!r} is a {declared[name]}, {task_type} needs one of "
                           f"{', '.join(sorted(allowed))}"})
    for name in declared.keys() - _used_connections(definition).keys():
        errors.append({"path": "connections", "message": f"{name!r} is listed, never used"})
    return errors


def _load(path: Path) -> Template:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    data = TemplateFile.model_validate(raw)
    definition = dict(data.definition)
    if data.params:
        # ``params`` right after name/description, as an author would write it.
        head: dict[str, Any] = {k: definition.pop(k) for k in ("name", "description")
                                if k in definition}
        definition = {**head, "params": data.params, **definition}
    return Template(
        slug=data.slug, title=data.title, category=data.category,
        description=" ".join(data.description.split()), params=data.params,
        connections=[c.model_dump() for c in data.connections], definition=definition,
        source=_dump(definition))


@functools.cache
def library(root: Path = LIBRARY) -> dict[str, Template]:
    """Every template, by slug, read once per process (the files ship with the code).
    A broken file stops nothing here: the test suite refuses it (``problems``)."""
    found: dict[str, Template] = {}
    for path in sorted(root.glob("*.yaml")):
        template = _load(path)
        found[template.slug] = template
    return dict(sorted(found.items(), key=lambda kv: (
        list(CATEGORIES).index(kv[1].category) if kv[1].category in CATEGORIES else 99,
        kv[1].title)))


def categories() -> list[dict[str, Any]]:
    counts: dict[str, int] = {}
    for template in library().values():
        counts[template.category] = counts.get(template.category, 0) + 1
    return [{"id": key, "label": label, "count": counts.get(key, 0)}
            for key, label in CATEGORIES.items()]


def list_templates(actor: Actor, category: str | None = None,
                   search: str | None = None) -> list[dict[str, Any]]:
    """The library (every signed-in user may read it: templates hold no team's data),
    filtered by category and by words found in the title, description, slug, category
    or connection types."""
    del actor  # the library is the same for everyone; kept for the service signature
    words = (search or "").lower().split()
    out = []
    for template in library().values():
        if category and template.category != category:
            continue
        haystack = " ".join([template.slug, template.title, template.description,
                             CATEGORIES.get(template.category, ""),
                             *(c["type"] for c in template.connections)]).lower()
        if all(word in haystack for word in words):
            out.append(template.summary())
    return out


def get_template(actor: Actor, slug: str) -> dict[str, Any]:
    del actor
    template = library().get(slug)
    if template is None:
        raise NotFound(f"template {slug} not found")
    return template.full()


def instantiate(slug: str, name: str | None = None,
                params_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The template's definition with another name and other parameter defaults; an
    unknown parameter is a 422 (the DSL checks each default against its type)."""
    template = library().get(slug)
    if template is None:
        raise NotFound(f"template {slug} not found")
    definition = copy.deepcopy(template.definition)
    if name:
        definition["name"] = name
    declared = definition.get("params") or {}
    unknown = sorted(set(params_defaults or {}) - set(declared))
    if unknown:
        raise ValidationFailed("Unknown parameters", [
            {"path": f"params_defaults.{key}",
             "message": f"unknown parameter (the template takes {', '.join(declared) or 'none'})"}
            for key in unknown])
    for key, value in (params_defaults or {}).items():
        # A value given for a required parameter makes it optional with that default.
        declared[key].pop("required", None)
        declared[key]["default"] = value
    return definition


def use_template(session: DbSession, actor: Actor, slug: str, team: str,
                 name: str | None = None,
                 params_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create a workflow in ``team`` from a template (Author of the team): version 1,
    saved as YAML text so that the editor shows it as the template reads."""
    definition = instantiate(slug, name, params_defaults)
    source = service.read_source(_dump(definition), "yaml")
    workflow = service.create_workflow(session, actor, team, source)
    version = service.get_version(session, actor, workflow.id)
    return {**service.workflow_dict(workflow, version), "template": slug}
