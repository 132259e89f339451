"""Admin -> Workers & queues: what the RQ transport is doing right now."""

from __future__ import annotations

from flask import current_app
from flask_appbuilder import BaseView
from flask_appbuilder.security.decorators import has_access, permission_name
from flask_appbuilder.views import expose

from app.runtime.redis_conn import get_redis
from app.security.request import request_actor
from capability.transport import service as transport


class TransportView(BaseView):
    route_base = "/workers"
    default_view = "status"
    class_permission_name = "Workers"
    method_permission_name = {"status": "read"}

    @expose("/")
    @has_access
    @permission_name("read")
    def status(self) -> str:
        data = transport.transport_status(
            request_actor(), get_redis(current_app), current_app.config["RQ_QUEUES"]
        )
        return self.render_template("transport/status.html", **data)
