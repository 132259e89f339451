"""Audit -> Audit trail: a read-only FAB list with filters and CSV export."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Response, stream_with_context
from flask_appbuilder import ModelView
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import has_access, permission_name
from flask_appbuilder.urltools import get_filter_args
from flask_appbuilder.views import expose

from app.audit import service
from app.audit.models import AuditEvent
from app.security.scope import ScopedMixin


def _blank(value: Any) -> Any:
    return "—" if value is None else value


class AuditTrailView(ScopedMixin, ModelView):
    route_base = "/audit"
    datamodel = SQLAInterface(AuditEvent)
    class_permission_name = "AuditTrail"
    method_permission_name = {"list": "read", "show": "read", "export": "export"}
    base_permissions = ["can_read", "can_export"]
    list_template = "audit/list.html"
    list_title = "Audit trail"
    show_title = "Audit event"
    list_columns = ["seq", "at", "actor", "action", "target_type", "target_id", "team",
                    "outcome", "ip", "via"]
    show_columns = list(service.EXPORT_COLUMNS)
    search_columns = ["actor", "action", "target_type", "target_id", "outcome", "at", "team",
                      "tenant"]
    label_columns = {"seq": "#", "target_type": "Target", "target_id": "Target id",
                     "at": "Time (UTC)", "ip": "IP", "request_id": "Request id",
                     "via": "Via", "prev_hash": "Previous hash"}
    formatters_columns = {
        "at": lambda at: at.strftime("%Y-%m-%d %H:%M:%S") if at else "",
        **{name: _blank for name in ("team", "ip", "target_id", "tenant", "request_id",
                                       "via")},
    }
    base_order = ("seq", "desc")
    page_size = 50

    @expose("/export.csv")
    @has_access
    @permission_name("export")
    def export(self) -> Response:
        get_filter_args(self._filters)
        joined = self._filters.get_joined_filters(self._base_filters)
        return Response(
            stream_with_context(self._csv(joined)),
            mimetype="text/csv",
            headers={"Content-Disposition": "attachment; filename=audit.csv"},
        )

    def _csv(self, filters: Any) -> Iterator[str]:
        def batches() -> Iterator[list[AuditEvent]]:
            page = 0
            while True:
                _, items = self.datamodel.query(
                    filters, order_column="seq", order_direction="asc", page=page, page_size=500
                )
                if not items:
                    return
                yield items
                page += 1

        return service.csv_stream(batches())
