"""``/api/v1/audit/`` and ``/api/v1/audit/export.csv`` (Admin; Auditor: own tenant)."""

from __future__ import annotations

from typing import Any

from flask import Response, request, stream_with_context
from flask_appbuilder.api import expose, protect, safe
from flask_appbuilder.hooks import before_request
from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.models.sqla.interface import SQLAInterface

from app.api_support import UuidModelApi, json_error
from app.audit import service
from app.audit.models import AuditEvent
from app.errors import ValidationFailed
from app.extensions import db
from app.security.request import request_actor
from app.security.scope import ScopedMixin

COLUMNS = list(service.EXPORT_COLUMNS)


class AuditArgsFilter(BaseFilter):
    """Applies the plain query arguments (actor, action, target, outcome, since, until)."""

    name = "Audit query arguments"
    arg_name = None

    def apply(self, query: Any, value: Any) -> Any:
        found = service.conditions(service.AuditFilter.from_args(request.args))
        return query.filter(*found) if found else query


class AuditApi(ScopedMixin, UuidModelApi):
    resource_name = "audit"
    datamodel = SQLAInterface(AuditEvent)
    class_permission_name = "AuditTrail"
    method_permission_name = {
        "get_list": "read", "get": "read", "info": "read", "export_csv": "export",
    }
    allow_browser_login = True
    include_route_methods = {"get_list", "get", "info", "export_csv"}
    list_columns = COLUMNS
    show_columns = COLUMNS
    order_columns = ["seq", "at", "actor", "action", "target_type", "outcome"]
    base_order = ("seq", "desc")
    search_columns = ["actor", "action", "target_type", "target_id", "outcome", "at",
                      "tenant", "team"]
    base_filters = [["id", AuditArgsFilter, lambda: None]]

    @before_request(only=["get_list", "export_csv"])
    def _check_args(self) -> Response | None:
        try:
            service.AuditFilter.from_args(request.args)
        except ValidationFailed as exc:
            return json_error(422, exc.message, exc.errors)
        return None

    @expose("/export.csv", methods=["GET"])
    @protect()
    @safe
    def export_csv(self) -> Response:
        """Export the events the caller may read as CSV (same filters as the list).
        ---
        get:
          parameters:
          - {in: query, name: actor, schema: {type: string}}
          - {in: query, name: action, schema: {type: string}}
          - {in: query, name: target, schema: {type: string}}
          - {in: query, name: outcome, schema: {type: string}}
          - {in: query, name: since, schema: {type: string, format: date-time}}
          - {in: query, name: until, schema: {type: string, format: date-time}}
          responses:
            200:
              description: CSV
              content: {text/csv: {schema: {type: string}}}
        """
        actor = request_actor()
        flt = service.AuditFilter.from_args(request.args)
        rows = service.export_csv(db.session, actor, flt)
        return Response(
            stream_with_context(rows),
            mimetype="text/csv",
            headers={"Content-Disposition": "attachment; filename=audit.csv"},
        )
