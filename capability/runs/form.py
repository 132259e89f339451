"""The "Run" form of a workflow's page: one field per param, in the author's order,
prefilled with the defaults; what is posted goes to ``runs.service.start_run`` as the
API's body would (``StartRunIn``), and its errors come back on their fields."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import abort, current_app

from app.api_support import call_for_page
from app.errors import Forbidden, ServiceError, parse
from app.extensions import db
from app.security.actor import Actor
from capability import dsl, service
from capability.engine import state
from capability.engine.dispatch import dispatcher_for
from capability.models import Run
from capability.runs import service as runs

T = TypeVar("T")


def _call(action: str, target: str | None, fn: Callable[[Actor], T]) -> T:
    return call_for_page(action, "run", target, fn, missing="not in your teams.")


INPUT_KIND = {"string": "text", "integer": "number", "number": "number", "boolean": "checkbox",
              "object": "json", "array": "json"}


@dataclass
class ParamField:
    name: str
    type: str
    kind: str  # text | number | checkbox | json | select
    required: bool
    description: str | None
    value: str = ""
    checked: bool = False
    choices: list[tuple[str, str]] = field(default_factory=list)  # (JSON value, label)


@dataclass
class RunForm:
    fields: list[ParamField]
    key: str = ""
    errors: dict[str, str] = field(default_factory=dict)  # param name -> message
    messages: list[str] = field(default_factory=list)  # errors about no one field
    message: str = ""
    # A refusal's status and headers (a quota's 429 and Retry-After), for the page.
    status: int = 422
    headers: dict[str, str] = field(default_factory=dict)


def _text(value: Any, param_type: str) -> str:
    if value is None:
        return ""
    if param_type in ("object", "array"):
        return json.dumps(value, indent=2, ensure_ascii=False)
    return str(value)


def run_form(definition: dsl.WorkflowDefinition, form: Mapping[str, str] | None = None) -> RunForm:
    """The form's fields, prefilled with the defaults (or with what was submitted)."""
    fields = []
    for name, spec in definition.params.items():
        key = f"param.{name}"
        kind = "select" if spec.enum else INPUT_KIND[spec.type]
        entry = ParamField(name, spec.type, kind, spec.required, spec.description)
        if spec.enum:
            entry.choices = [(json.dumps(c), str(c)) for c in spec.enum]
            entry.value = form.get(key, "") if form is not None else (
                json.dumps(spec.default) if spec.default is not None else "")
        elif kind == "checkbox":
            entry.checked = key in form if form is not None else spec.default is True
        else:
            entry.value = form.get(key, "") if form is not None else _text(spec.default, spec.type)
        fields.append(entry)
    return RunForm(fields, key=(form or {}).get("idempotency_key", ""))


def _read(entry: ParamField, raw: str, checked: bool) -> tuple[bool, Any, str | None]:
    """(given?, value, a JSON error) for one field; values the type refuses are passed on
    as typed, for the service to name the expected type."""
    if entry.kind == "checkbox":
        return True, checked, None
    if raw.strip() == "":
        return False, None, None
    if entry.kind in ("select", "json"):
        try:
            return True, json.loads(raw), None
        except ValueError as exc:
            return True, raw, f"not valid JSON ({exc})"
    if entry.type in ("integer", "number"):
        for parse in (int, float):
            try:
                return True, parse(raw), None
            except ValueError:
                continue
    return True, raw, None


def start_from_form(workflow_id: str, form: Mapping[str, str]) -> tuple[Run | None, bool, RunForm]:
    """Start a manual run from the posted form: ``(run, created, form)``, or ``(None,
    False, form with errors)`` when the service refused (422, audited)."""
    version = _call("start", workflow_id,
                    lambda a: service.get_version(db.session, a, workflow_id))
    result = run_form(state.definition_of(version), form)
    params: dict[str, Any] = {}
    local: dict[str, str] = {}
    for entry in result.fields:
        given, value, problem = _read(entry, form.get(f"param.{entry.name}", ""),
                                      f"param.{entry.name}" in form)
        if given:
            params[entry.name] = value
        if problem:
            local[entry.name] = problem
    key = result.key.strip() or None

    def start(actor: Actor) -> tuple[Run, bool]:
        body = parse(runs.StartRunIn, {"params": params, "idempotency_key": key})
        return runs.start_run(db.session, actor, dispatcher_for(current_app), workflow_id,
                              body, trigger="manual")

    try:
        run, created = _call("start", workflow_id, start)
    except Forbidden:
        abort(403)
    except ServiceError as exc:
        result.message = exc.message
        result.status, result.headers = exc.status, exc.headers()
        for error in exc.errors:
            path = str(error.get("path", ""))
            name = path.removeprefix("params.")
            if path.startswith("params.") and name in {f.name for f in result.fields}:
                result.errors[name] = local.get(name) or error.get("message", "")
            elif path == "idempotency_key":
                result.errors[path] = error.get("message", "")
            else:
                result.messages.append(f"{path}: {error.get('message', '')}" if path
                                       else str(error.get("message", "")))
        return None, False, result
    return run, created, result

