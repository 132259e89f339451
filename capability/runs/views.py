"""Runs in the browser: the list, a run's page (graph, timeline, tasks, controls,
approvals) and the failed tasks (the "Run" form of a workflow's page: ``runs.form``).

Thin over ``runs.service``, the functions ``/api/v1/runs/`` calls: a view calls the
service with the request's actor (another team's run: 404) and flashes what it refused
(audited like a refused API call). The page shows the controls ``run_dict`` says the
user may use now, and the approve/reject buttons only to who may answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, flash, redirect, request, url_for
from flask_appbuilder import ModelView
from flask_appbuilder.models.sqla.filters import FilterEqual
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_appbuilder.widgets import ListWidget
from werkzeug.wrappers import Response
from wtforms import SelectField

from app.api_support import call_for_page
from app.errors import ServiceError, parse
from app.extensions import db
from app.ids import short_id
from app.security.actor import Actor
from app.security.request import request_actor
from app.security.scope import ScopedMixin
from app.times import duration, when
from capability import dsl, live
from capability.dsl import RunStatus, TaskStatus
from capability.engine import snapshot, state
from capability.engine.decide import ACTIONS
from capability.engine.dispatch import dispatcher_for
from capability.models import Run, TaskKind, TaskRun
from capability.runs import graph as run_graph
from capability.runs import service as runs

T = TypeVar("T")

# The short id says which run: a list's "Retry run" comes back to the list, not the run.
DONE = {"cancel": "Run {run} cancelled.", "pause": "Run {run} paused: running attempts finish, "
        "nothing new starts.", "resume": "Run {run} resumed.",
        "retry": "Run {run}: failed tasks queued again."}
# Tasks worth opening first on a run's page.
ATTENTION = ("waiting_input", "waiting_approval", "failed", "running", "retrying")


def _call(action: str, target: str | None, fn: Callable[[Actor], T]) -> T:
    """``fn(actor)``; a refused change is audited. NotFound -> 404, other errors raised."""
    return call_for_page(action, "run", target, fn, missing="not in your teams.")


def may_control(actor: Actor, team_id: str) -> bool:
    """Whether the page offers controls at all: the permission, and the service's rule
    of who may operate the team's runs (which controls: ``run_dict``'s ``controls``)."""
    if not current_app.extensions["appbuilder"].sm.has_access("can_control", "Runs"):
        return False
    return runs.may_operate(actor, team_id)


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
            return duration(item.started_at, item.finished_at)
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
    formatters_columns = {"created_at": when}
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
            _call(action, pk, lambda a: runs.control(
                db.session, a, dispatcher_for(current_app), pk, action))
        except ServiceError as exc:
            flash(exc.message, "danger")
        else:
            flash(DONE[action].format(run=short_id(pk)), "success")
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
                db.session, a, dispatcher_for(current_app), pk, task_id, approve,
                parse(runs.AnswerIn, {"comment": comment})))
        except ServiceError as exc:
            flash(exc.message, "danger")
        else:
            flash(f"Task {task_id} {'approved' if approve else 'rejected'}.", "success")
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
    formatters_columns = {"finished_at": when}
    base_filters = [["status", FilterEqual, TaskStatus.FAILED.value],
                    ["kind", FilterEqual, TaskKind.TASK]]  # not the undo steps
    base_order = ("finished_at", "desc")
    page_size = 25


# -- a run's page --------------------------------------------------------------------
def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


# The panel run_page.js copies for a task drawn on demand (its id is put in for this one).
BLANK: dict[str, Any] = {
    "blank": True, "task_id": "__task__", "type": "", "status": "pending", "depends_on": [],
    "is_approval": False, "is_agent": False, "started_at": None, "finished_at": None,
    "reason": None,
    "items": [], "items_total": 0, "error": None, "attempt_history": [],
    "attempt_history_total": 0, "output_cut": None, "output_json": None,
}


def _agent_prompt(prompt: dict[str, Any]) -> dict[str, Any]:
    """What the run page shows of a waiting agent step (empty before it waits)."""
    return {"instructions": prompt.get("instructions") or "",
            "model_hint": prompt.get("model_hint"),
            "inputs_json": _pretty(prompt.get("inputs") or {}) if prompt else "",
            "schema_json": _pretty(prompt.get("output_schema") or {}) if prompt else "",
            "checks_json": _pretty(prompt["checks"]) if prompt.get("checks") else "",
            "filled": bool(prompt)}


def _output_text(task: dict[str, Any]) -> str | None:
    cut = task.get("output_cut")
    if cut:  # the start of its JSON; the panel says how large it is and links to it whole
        return f"{cut['preview']}\u2026"
    return None if task["output"] is None else _pretty(task["output"])


def install_template_helpers(app: Flask) -> None:
    """``run_controls(run)`` for the list widgets (they render without the view): the
    controls a run allows now, by the rule the service enforces."""
    app.jinja_env.globals["run_controls"] = lambda run: runs.controls_of_run(db.session, run)


def page_context(run: Run, actor: Actor) -> dict[str, Any]:
    """What a run's page shows: a constant number of statements whatever the size of the
    run (``runs.run_dict``, ``live.run_state``), the first page of each task's elements
    and attempts (the page loads more through ``GET /api/v1/runs/<id>/tasks/<task_id>``)
    and large outputs cut (linked whole)."""
    max_value = int(current_app.config.get("API_VALUE_MAX_CHARS", 65536))
    reads = runs.read_run(db.session, run, max_value=max_value)  # the JSON's and live state's
    data = runs.run_dict(db.session, run, actor, max_value=max_value, reads=reads)
    # Cached by version: definition_of(run.version) read the version and serialised it.
    definition = state.plan_for(db.session, run).definition
    specs = {t.id: t for t in definition.tasks}
    tasks = []
    for task in data["tasks"]:
        spec = specs.get(task["task_id"])
        prompt = task.get("prompt") or {}
        is_approval = bool(spec and spec.type == "approval")
        is_agent = bool(spec and spec.type == "agent")
        tasks.append({
            **task,
            "type": spec.type if spec else "",
            "depends_on": list(spec.depends_on) if spec else [],
            "is_approval": is_approval,
            # Rendered when the task began to wait (never the template's text).
            "message": prompt.get("message"),
            "approvers": runs.who_may_answer(prompt.get("approvers"), run.team.name),
            "may_answer": is_approval and runs.may_answer(actor, run, task),
            # An agent step: its rendered prompt, and whether this user may answer it.
            "is_agent": is_agent,
            "agent": _agent_prompt(prompt) if is_agent else None,
            "may_complete": is_agent and runs.may_operate(actor, run.team_id),
            "output_json": _output_text(task),
        })
    graph = run_graph.graph_data(definition, {t["task_id"]: t for t in tasks})
    wanted = request.args.get("task")
    ids = [t["task_id"] for t in tasks]
    first = ids[0] if ids else None
    selected = wanted if wanted in ids else next(
        (t["task_id"] for s in ATTENTION for t in tasks if t["status"] == s), first)
    # A 1,000-task run's page drew 1,000 panels (4 MB); the rest are built on demand.
    drawn = set(ids[:snapshot.PAGE]) | {selected} | {t["task_id"] for t in tasks
                                                     if t["is_approval"] or t["is_agent"]}
    panels = [t for t in tasks if t["task_id"] in drawn] + [BLANK]
    return {
        "run": run, "data": data, "tasks": tasks, "graph": graph, "selected": selected,
        "panels": panels,
        "actions": ACTIONS,
        "state": live.run_state(db.session, run, reads), "params_json": _pretty(data["params"]),
        "may_control": may_control(actor, run.team_id),
        "finished": run.status in {s.value for s in dsl.FINISHED_RUN_STATUSES},
        "status_label": status_label, "page_size": snapshot.PAGE,
        "max_page": snapshot.MAX_PAGE,
    }
