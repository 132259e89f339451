"""``GET /api/v1/workers/``: the queues and workers of the RQ transport (Admin only)."""

from __future__ import annotations

from dataclasses import asdict

from flask import Response, current_app
from flask_appbuilder.api import BaseApi, expose, protect, safe

from app.api_support import call_service
from app.runtime.redis_conn import get_redis
from app.security.actor import Actor
from capability.transport import service as transport


class TransportApi(BaseApi):
    resource_name = "workers"
    class_permission_name = "Workers"
    method_permission_name = {"get_status": "read"}
    allow_browser_login = True

    @expose("/", methods=["GET"])
    @protect()
    @safe
    def get_status(self) -> Response:
        """Queue depths and live workers.
        ---
        get:
          responses:
            200:
              description: queues and workers
              content:
                application/json:
                  schema:
                    type: object
                    properties:
                      queues: {type: array, items: {type: object}}
                      workers: {type: array, items: {type: object}}
        """

        def run(actor: Actor) -> Response:
            data = transport.transport_status(
                actor, get_redis(current_app), current_app.config["RQ_QUEUES"]
            )
            return self.response(
                200,
                queues=[asdict(q) for q in data["queues"]],
                workers=[asdict(w) for w in data["workers"]],
            )

        return call_service("read", "workers", None, run)
