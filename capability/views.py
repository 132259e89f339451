"""Workflows in the browser: the list, the editor, a workflow's page, diffs between versions.

Thin over ``capability.service``, the functions ``/api/v1/workflows/`` calls: a view
parses the form, calls the service with the request's actor and maps its errors
(another team's workflow: 404; a refused change: 403; an invalid definition: the
editor again, with every error on its line). Refused changes are audited like refused
API calls.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from flask import abort, flash, jsonify, redirect, request, url_for
from flask_appbuilder import ModelView
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access
from flask_appbuilder.views import expose
from flask_appbuilder.widgets import ListWidget
from werkzeug.wrappers import Response

from app.api_support import call_for_page
from app.errors import ServiceError, parse
from app.extensions import db
from app.ids import short_id
from app.security.actor import Actor
from app.security.request import request_actor
from app.security.scope import ScopedMixin
from app.tenancy.service import list_teams
from app.times import when
from capability import dsl, service
from capability.dsl import type_help
from capability.engine import state, steptest
from capability.filters import LiveOnly
from capability.models import Workflow, WorkflowVersion
from capability.runs import graph as run_graph
from capability.runs.form import RunForm, run_form, start_from_form
from capability.service import with_lines

T = TypeVar("T")

PERMISSIONS = {
    "list": "read", "page": "read", "diff": "read", "check": "read", "reference": "read",
    "task_types": "read",
    "new": "write", "change": "write", "rollback": "write", "remove": "write",
    "run": "run",
}
# The editor's "DSL reference" link: the reference of the definition language, in the
# checkout the application runs from (docs/ is not served as static files).
DSL_REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "dsl_reference.md"
STARTER = """\
name: my-workflow
description: What this workflow does
tasks:
  - id: first
    type: noop
"""


@dataclass(frozen=True)
class DiffRow:
    """One row of a side-by-side diff; a side without a line has ``None`` as number."""

    kind: str  # same | changed | removed | added
    old_no: int | None
    old: str
    new_no: int | None
    new: str


def side_by_side(old: str, new: str) -> list[DiffRow]:
    """The rows of a side-by-side diff of two texts, line by line (difflib)."""
    a, b = old.splitlines(), new.splitlines()
    rows: list[DiffRow] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows += [DiffRow("same", i + 1, a[i], j + 1, b[j])
                     for i, j in zip(range(i1, i2), range(j1, j2), strict=True)]
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            left, right = i1 + k < i2, j1 + k < j2
            kind = "changed" if left and right else "removed" if left else "added"
            rows.append(DiffRow(
                kind,
                i1 + k + 1 if left else None, a[i1 + k] if left else "",
                j1 + k + 1 if right else None, b[j1 + k] if right else "",
            ))
    return rows


def _call(action: str, target: str | None, fn: Callable[[Actor], T]) -> T:
    """Run ``fn(actor)``. A refused change is audited; NotFound -> 404, Forbidden -> 403;
    any other ``ServiceError`` is raised again for the page to show."""
    return call_for_page(action, "workflow", target, fn,
                         missing="deleted, or not in your teams.", forbidden=True)


class WorkflowListWidget(ListWidget):
    template = "workflows/list_widget.html"


class WorkflowView(ScopedMixin, ModelView):
    """Menu "Workflows": the list (FAB), and every page of one workflow (the service)."""

    route_base = "/workflows"
    datamodel = SQLAInterface(Workflow)
    class_permission_name = "Workflows"
    method_permission_name = PERMISSIONS
    # No FAB add/edit/delete forms: every change goes through the service.
    include_route_methods = set(PERMISSIONS)
    list_title = "Workflows"
    list_template = "workflows/list.html"
    list_widget = WorkflowListWidget
    list_columns = ["name", "team", "current_version", "description", "updated_at"]
    label_columns = {"current_version": "Version", "updated_at": "Updated"}
    order_columns = ["name", "current_version", "updated_at"]
    search_columns = ["name", "team", "description"]
    formatters_columns = {"updated_at": when}
    base_order = ("name", "asc")
    base_filters = [["id", LiveOnly, lambda: None]]

    # -- helpers -------------------------------------------------------------
    def _may_write(self, actor: Actor, team_id: str | None = None) -> bool:
        if not self.appbuilder.sm.has_access("can_write", self.class_permission_name):
            return False
        return actor.is_admin or (team_id is None or team_id in actor.team_ids)

    def _may_run(self, actor: Actor, team_id: str) -> bool:
        if not self.appbuilder.sm.has_access("can_run", self.class_permission_name):
            return False
        return actor.is_admin or team_id in actor.team_ids

    def _editor(self, status: int = 200, **context: Any) -> tuple[str, int]:
        context.setdefault("errors", [])
        context.setdefault("message", "")
        page = self.render_template(
            "workflows/editor.html", check_url=url_for(".check"), task_types=dsl.registry.names(),
            task_help=type_help.palette(), needs_a_run=sorted(steptest.NEEDS_A_RUN), **context,
        )
        return page, status

    # -- pages ---------------------------------------------------------------
    @expose("/new", methods=["GET", "POST"])
    @has_access
    def new(self) -> Any:
        actor = request_actor()
        teams = [t for t in list_teams(db.session, actor) if self._may_write(actor, t.id)]
        team = request.form.get("team", "")
        text = request.form.get("definition", STARTER)
        if request.method == "POST":
            try:
                workflow = _call("create", None, lambda a: service.create_workflow(
                    db.session, a, team, service.read_source(text)))
            except ServiceError as exc:
                return self._editor(exc.status, workflow=None, teams=teams, team=team,
                                    source=text, message=exc.message,
                                    errors=with_lines(text, exc.errors))
            flash(f"Workflow {workflow.name} created: version 1.", "success")
            return redirect(url_for(".page", pk=workflow.id))
        return self._editor(workflow=None, teams=teams, team=team, source=text)

    @expose("/<pk>/edit", methods=["GET", "POST"])
    @has_access
    def change(self, pk: str) -> Any:
        current = _call("update", pk, lambda a: service.get_version(db.session, a, pk))
        workflow = current.workflow
        if not self._may_write(request_actor(), workflow.team_id):
            abort(403)
        text = request.form.get("definition", current.source)
        if request.method == "POST":
            try:
                _call("update", pk, lambda a: service.update_workflow(
                    db.session, a, pk, service.read_source(text)))
            except ServiceError as exc:
                return self._editor(exc.status, workflow=workflow, source=text,
                                    message=exc.message, errors=with_lines(text, exc.errors))
            flash(f"Saved version {workflow.current_version} of {workflow.name}.", "success")
            return redirect(url_for(".page", pk=pk))
        return self._editor(workflow=workflow, source=text)

    @expose("/<pk>")
    @has_access
    def page(self, pk: str) -> str:
        return self._page(pk)[0]

    def _page(self, pk: str, form: RunForm | None = None, status: int = 200) -> tuple[str, int]:
        current = _call("read", pk, lambda a: service.get_version(db.session, a, pk))
        versions = _call("read", pk, lambda a: service.list_versions(db.session, a, pk))
        workflow = current.workflow
        may_run = self._may_run(request_actor(), workflow.team_id)
        definition = state.definition_of(current)
        if may_run and form is None:
            form = run_form(definition)
        page = self.render_template(
            "workflows/page.html", workflow=workflow, current=current, versions=versions,
            may_write=self._may_write(request_actor(), workflow.team_id), when=when,
            may_run=may_run, run_form=form, run_failed=status != 200,
            cost=service.workflow_cost(db.session, workflow.id),
            graph=run_graph.graph_data(definition),
        )
        return page, status

    @expose("/reference")
    @has_access
    def reference(self) -> Response:
        """The DSL reference as it is written: Markdown reads well as plain text, and the
        browser renders none of it (no HTML to sanitise, no Markdown library to add)."""
        try:
            text = DSL_REFERENCE.read_text(encoding="utf-8")
        except OSError:
            abort(404)
        return Response(text, mimetype="text/plain")

    @expose("/task-types")
    @has_access
    def task_types(self) -> str:
        """Menu "Task types": every registered task type with its fields and an example,
        the same help the editor shows for the task under the cursor."""
        return self.render_template("workflows/task_types.html", types=type_help.palette())

    @expose("/<pk>/run", methods=["POST"])
    @has_access
    def run(self, pk: str) -> Any:
        """The "Run" form: a manual run of the current version, then its page."""
        started, created, form = start_from_form(pk, request.form)
        if started is None:
            page, status = self._page(pk, form, form.status)
            return page, status, form.headers
        flash(f"Run {short_id(started.id)} started." if created else "A run with this "
              "idempotency key exists already: here it is.", "success" if created else "info")
        return redirect(url_for("RunView.page", pk=started.id))

    @expose("/<pk>/diff")
    @has_access
    def diff(self, pk: str) -> str:
        workflow = _call("read", pk, lambda a: service.get_workflow(db.session, a, pk))
        latest = workflow.current_version
        old_no = request.args.get("from", max(latest - 1, 1), type=int)
        new_no = request.args.get("to", latest, type=int)

        def version(number: int) -> WorkflowVersion:
            return _call("read", pk, lambda a: service.get_version(db.session, a, pk, number))

        old, new = version(old_no), version(new_no)
        rows = side_by_side(old.source, new.source)
        counts = {
            "removed": sum(r.kind in ("changed", "removed") for r in rows),
            "added": sum(r.kind in ("changed", "added") for r in rows),
        }
        return self.render_template(
            "workflows/diff.html", workflow=workflow, old=old, new=new, rows=rows,
            counts=counts, versions=range(latest, 0, -1), when=when,
        )

    @expose("/<pk>/rollback", methods=["POST"])
    @has_access
    def rollback(self, pk: str) -> Response:
        raw = request.form.get("version", "")
        number: Any = int(raw) if raw.isdigit() else raw
        try:
            workflow = _call("rollback", pk, lambda a: service.rollback(
                db.session, a, pk, parse(service.RollbackIn, {"version": number})))
        except ServiceError as exc:
            flash(str(exc), "danger")
        else:
            flash(f"Rolled back to version {number}: saved as version "
                  f"{workflow.current_version}.", "success")
        return redirect(url_for(".page", pk=pk))

    @expose("/<pk>/delete", methods=["POST"])
    @has_access
    def remove(self, pk: str) -> Response:
        workflow = _call("delete", pk, lambda a: service.get_workflow(db.session, a, pk))
        name = workflow.name
        try:
            _call("delete", pk, lambda a: service.delete_workflow(db.session, a, pk))
        except ServiceError as exc:
            flash(str(exc), "danger")
            return redirect(url_for(".page", pk=pk))
        flash(f"Workflow {name} deleted (its versions and runs are kept).", "success")
        return redirect(url_for(".list"))

    @expose("/check", methods=["POST"])
    @has_access
    def check(self) -> Any:
        """The editor's "Validate": what ``/api/v1/workflows/validate`` answers for text
        (each error with its line)."""
        try:
            body = parse(service.DefinitionIn, request.get_json(silent=True))
        except ServiceError as exc:
            return jsonify(message=exc.message, errors=exc.errors), 400
        text = body.definition
        if not isinstance(text, str):
            return jsonify(message="send {\"definition\": \"<YAML or JSON text>\"}"), 400
        try:
            service.check_definition(service.read_source(text, body.format))
        except ServiceError as exc:
            return jsonify(valid=False, message=exc.message, errors=with_lines(text, exc.errors))
        return jsonify(valid=True, errors=[])
