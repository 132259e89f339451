"""Runs in the browser: the list, a run's page (graph, timeline, tasks, controls), the
failed tasks, and the "Run" form of a workflow's page.

Thin over ``capability.runs``, the functions ``/api/v1/runs/`` calls: a view calls the
service with the request's actor (another team's run: 404), flashes what it refused
(audited like a refused API call) and publishes the run's new state to its watchers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import abort, current_app, flash, redirect, request, url_for
from flask_appbuilder import ModelView
from flask_appbuilder.models.sqla.filters import FilterEqual
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_appbuilder.widgets import ListWidget
from werkzeug.wrappers import Response
from wtforms import SelectField

from app.api_support import call_for_page
from app.errors import Forbidden, ServiceError
from app.extensions import db
from app.ids import short_id
from app.security.actor import Actor
from app.security.request import request_actor
from app.security.scope import ScopedMixin
from capability import dsl, live, service
from capability.api import dispatcher
from capability.dsl import RunStatus, TaskStatus
from capability.engine import runner
from capability.models import Run, TaskRun
from capability.runs import graph as run_graph
from capability.runs import service as runs

T = TypeVar("T")

# Which run statuses each control applies to (the service has the last word).
CONTROL_WHEN = {
    "cancel": ("queued", "running", "paused"),
    "pause": ("queued", "running"),
    "resume": ("paused",),
    "retry": ("failed", "cancelled"),
}
# The short id says which run: a list's "Retry run" comes back to the list, not the run.
DONE = {"cancel": "Run {run} cancelled.", "pause": "Run {run} paused: running attempts finish, "
        "nothing new starts.", "resume": "Run {run} resumed.",
        "retry": "Run {run}: failed tasks queued again."}
# Tasks worth opening first on a run's page.
ATTENTION = ("waiting_approval", "failed", "running", "retrying")


def _call(action: str, target: str | None, fn: Callable[[Actor], T]) -> T:
    """``fn(actor)``; a refused change is audited. NotFound -> 404, other errors raised."""
    return call_for_page(action, "run", target, fn, missing="not in your teams.")


def may_control(actor: Actor, team_id: str) -> bool:
    """Operators and Authors of the run's team, and Admin (the service checks again)."""
    if not current_app.extensions["appbuilder"].sm.has_access("can_control", "Runs"):
        return False
    return actor.is_admin or team_id in actor.team_ids


def _safe_next(default: str) -> str:
    target = request.form.get("next", "")
    parts = urlsplit(target)
    local = target.startswith("/") and not target.startswith("//") and not parts.netloc
    return target if local and not parts.scheme else default


def status_label(status: str | None) -> str:
    return (status or "").replace("_", " ")


# -- the list ------------------------------------------------------------------------
class RunInterface(SQLAInterface):
    """Adds the virtual list column ``duration`` (started -> finished, or so far)."""

    @staticmethod
    def _get_attr_value(item: Any, col: str) -> Any:
        if col == "duration":
            return run_graph.duration(item.started_at, item.finished_at)
        return SQLAInterface._get_attr_value(item, col)


class RunListWidget(ListWidget):
    template = "runs/list_widget.html"


class FailedTaskListWidget(ListWidget):
    template = "runs/failed_widget.html"


def _status_first(view: ModelView, column: str) -> None:
    """Put "Equal to" first among a status column's search filters (a select box)."""
    filters = view._filters._search_filters.get(column)  # type: ignore[attr-defined]
    if filters:
        filters.sort(key=lambda f: not isinstance(f, FilterEqual))


class RunView(ScopedMixin, ModelView):
    """Menu "Workflows" -> "Runs": the list (FAB) and a run's page (the service)."""

    route_base = "/runs"
    datamodel = RunInterface(Run)
    class_permission_name = "Runs"
    method_permission_name = {"list": "read", "page": "read", "control": "control",
                              "answer": "control"}
    include_route_methods = {"list", "page", "control", "answer"}
    list_title = "Runs"
    list_template = "runs/list.html"
    list_widget = RunListWidget
    list_columns = ["id", "workflow", "workflow_version", "status", "trigger", "created_by",
                    "created_at", "duration"]
    label_columns = {"id": "Run", "workflow_version": "Version", "created_by": "Started by",
                     "created_at": "Created", "duration": "Duration"}
    order_columns = ["workflow_version", "status", "trigger", "created_by", "created_at"]
    search_columns = ["workflow", "status", "trigger", "created_at", "created_by"]
    search_form_extra_fields = {
        "status": SelectField("Status", choices=[s.value for s in RunStatus]),
        # Sub-workflow runs have the trigger "workflow" (set by the engine, never asked).
        "trigger": SelectField("Trigger", choices=[*runs.TRIGGERS, "workflow"]),
    }
    formatters_columns = {"created_at": run_graph.when}
    base_order = ("created_at", "desc")
    page_size = 25

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _status_first(self, "status")
        _status_first(self, "trigger")

    @expose("/<pk>")
    @has_access
    def page(self, pk: str) -> str:
        run = _call("read", pk, lambda a: runs.get_run(db.session, a, pk))
        return self.render_template("runs/page.html", **page_context(run, request_actor()))

    @expose("/<pk>/control/<action>", methods=["POST"])
    @has_access
    def control(self, pk: str, action: str) -> Response:
        if action not in runs.CONTROLS:
            abort(404)
        try:
            _call(action, pk, lambda a: runs.control(db.session, a, dispatcher(), pk, action))
        except ServiceError as exc:
            flash(exc.message, "danger")
        else:
            flash(DONE[action].format(run=short_id(pk)), "success")
            live.publish_run(current_app._get_current_object(), pk)  # type: ignore[attr-defined]
        return redirect(_safe_next(url_for(".page", pk=pk)))

    @expose("/<pk>/tasks/<task_id>/answer", methods=["POST"])
    @has_access
    def answer(self, pk: str, task_id: str) -> Response:
        decision = request.form.get("decision", "")
        if decision not in ("approve", "reject"):
            abort(400, "decision must be approve or reject")
        approve = decision == "approve"
        comment = request.form.get("comment", "").strip()
        try:
            _call(decision, pk, lambda a: runs.answer_approval(
                db.session, a, dispatcher(), pk, task_id, approve, comment))
        except ServiceError as exc:
            flash(exc.message, "danger")
        else:
            flash(f"Task {task_id} {'approved' if approve else 'rejected'}.", "success")
            live.publish_run(current_app._get_current_object(), pk)  # type: ignore[attr-defined]
        return redirect(url_for(".page", pk=pk, task=task_id))


class FailedTaskView(ScopedMixin, ModelView):
    """Menu "Workflows" -> "Failed tasks": tasks that ended failed, after their retries."""

    route_base = "/failed_tasks"
    datamodel = SQLAInterface(TaskRun)
    class_permission_name = "Runs"
    method_permission_name = {"list": "read"}
    include_route_methods = {"list"}
    list_title = "Failed tasks"
    list_template = "runs/list.html"
    list_widget = FailedTaskListWidget
    list_columns = ["task_id", "run", "run.workflow", "error", "attempts", "finished_at"]
    label_columns = {"task_id": "Task", "run": "Run", "run.workflow": "Workflow",
                     "error": "Last error", "finished_at": "Failed at"}
    order_columns = ["task_id", "attempts", "finished_at"]
    search_columns = ["task_id", "error", "finished_at"]
    formatters_columns = {"finished_at": run_graph.when}
    base_filters = [["status", FilterEqual, TaskStatus.FAILED.value],
                    ["kind", FilterEqual, "task"]]  # not the undo steps of compensation
    base_order = ("finished_at", "desc")
    page_size = 25


# -- a run's page --------------------------------------------------------------------
def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def page_context(run: Run, actor: Actor) -> dict[str, Any]:
    data = runs.run_dict(db.session, run)
    definition = runner.definition_of(run.version)
    specs = {t.id: t for t in definition.tasks}
    tasks = []
    data.setdefault("compensations", [])
    for task in data["tasks"]:
        spec = specs.get(task["task_id"])
        tasks.append({
            **task,
            "type": spec.type if spec else "",
            "depends_on": list(spec.depends_on) if spec else [],
            "message": (spec.with_ or {}).get("message") if spec and spec.type == "approval"
            else None,
            "is_approval": bool(spec and spec.type == "approval"),
            "output_json": None if task["output"] is None else _pretty(task["output"]),
            "items": task.get("items", []),
        })
    graph = run_graph.graph_data(definition, {t["task_id"]: t for t in tasks})
    wanted = request.args.get("task")
    ids = [t["task_id"] for t in tasks]
    first = ids[0] if ids else None
    selected = wanted if wanted in ids else next(
        (t["task_id"] for s in ATTENTION for t in tasks if t["status"] == s), first)
    return {
        "run": run, "data": data, "tasks": tasks, "graph": graph, "selected": selected,
        "when_iso": run_graph.when_iso, "took": run_graph.took,
        "state": live.run_state(db.session, run), "params_json": _pretty(data["params"]),
        "may_control": may_control(actor, run.team_id), "control_when": CONTROL_WHEN,
        "finished": run.status in {s.value for s in dsl.FINISHED_RUN_STATUSES},
        "when": run_graph.when, "duration": run_graph.duration, "status_label": status_label,
    }


# -- the "Run" form of a workflow's page ---------------------------------------------
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
    result = run_form(runner.definition_of(version), form)
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
    try:
        run, created = _call("start", workflow_id, lambda a: runs.start_run(
            db.session, a, dispatcher(), workflow_id, params, key, trigger="manual"))
    except Forbidden:
        abort(403)
    except ServiceError as exc:
        result.message = exc.message
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

