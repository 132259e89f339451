"""``/api/v1/runs/`` (API.md, "Runs"): list and read runs of your teams."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from flask_appbuilder.api import expose, protect, safe
from flask_appbuilder.hooks import before_request
from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.models.sqla.interface import SQLAInterface

from app.api_support import UuidModelApi, call_service, json_error
from app.extensions import db
from app.models import Team
from app.security.actor import Actor
from app.security.scope import ScopedMixin
from capability import runs
from capability.dsl import RunStatus
from capability.models import Run

STATUSES = {s.value for s in RunStatus}


class RunArgsFilter(BaseFilter):
    """The plain query arguments of API.md: workflow, status, team."""

    name = "Run query arguments"
    arg_name = None

    def apply(self, query: Any, value: Any) -> Any:
        args = request.args
        if args.get("workflow"):
            query = query.filter(Run.workflow_id == args["workflow"])
        if args.get("status"):
            query = query.filter(Run.status == args["status"])
        if args.get("team"):
            query = query.filter(Run.team_id.in_(
                db.session.query(Team.id).filter(Team.name == args["team"])
            ))
        return query


class RunApi(ScopedMixin, UuidModelApi):
    resource_name = "runs"
    datamodel = SQLAInterface(Run)
    class_permission_name = "Runs"
    method_permission_name = {"get_list": "read", "get": "read", "info": "read"}
    allow_browser_login = True
    include_route_methods = {"get_list", "get", "info"}
    list_columns = ["id", "workflow_id", "workflow.name", "workflow_version", "team.name",
                    "status", "trigger", "params", "created_by", "created_at", "started_at",
                    "finished_at"]
    order_columns = ["created_at", "started_at", "finished_at", "status"]
    base_order = ("created_at", "desc")
    search_columns = ["status", "trigger", "workflow", "team", "created_at"]
    base_filters = [["id", RunArgsFilter, lambda: None]]

    @before_request(only=["get_list"])
    def _check_args(self) -> Response | None:
        status = request.args.get("status")
        if status and status not in STATUSES:
            return json_error(422, "Invalid run filter", [
                {"path": "status", "message": f"one of {', '.join(sorted(STATUSES))}"}])
        return None

    def pre_get_list(self, data: dict[str, Any]) -> None:
        for item in data.get("result", []):
            item["workflow"] = (item.get("workflow") or {}).get("name")
            item["team"] = (item.get("team") or {}).get("name")

    @expose("/<pk>", methods=["GET"])
    @protect()
    @safe
    def get(self, pk: str, **_: Any) -> Response:  # type: ignore[override]
        """A run with its tasks: status, attempts, output, error.
        ---
        get:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: the run}
            404: {description: "not found, or not in your teams"}
        """

        def run(actor: Actor) -> Response:
            found = runs.get_run(db.session, actor, pk)
            return self.response(200, id=pk, result=runs.run_dict(db.session, found))

        return call_service("read", "run", pk, run)
