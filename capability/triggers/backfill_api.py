"""``/api/v1/backfills/`` (TRIGGERS.md, "Backfill"): progress and cancel, thin over
``triggers.backfills`` (a backfill is created at ``POST /api/v1/schedules/<id>/backfill``)."""

from __future__ import annotations

from flask import Response, current_app
from flask_appbuilder.api import BaseApi, expose, protect, safe

from app.api_support import call_service
from app.extensions import db
from app.security.actor import Actor
from capability.engine.dispatch import dispatcher_for
from capability.triggers import backfills


class BackfillApi(BaseApi):
    resource_name = "backfills"
    class_permission_name = "Schedules"
    method_permission_name = {"get": "read", "cancel": "control"}
    allow_browser_login = True

    @expose("/<pk>", methods=["GET"])
    @protect()
    @safe
    def get(self, pk: str) -> Response:
        """Progress: total, created, succeeded, failed, cancelled, running, status.
        ---
        get:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: the backfill's progress}
            404: {description: not found}
        """
        return call_service("read", "backfill", pk, lambda actor: self.response(
            200, id=pk, result=backfills.backfill_dict(
                db.session, backfills.get_backfill(db.session, actor, pk))))

    @expose("/<pk>/cancel", methods=["POST"])
    @protect()
    @safe
    def cancel(self, pk: str) -> Response:
        """Stop starting runs, and cancel the backfill's unfinished runs.
        ---
        post:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: cancelled}
            404: {description: not found}
            409: {description: it is not running}
        """

        def run(actor: Actor) -> Response:
            done = backfills.cancel_backfill(db.session, actor, dispatcher_for(current_app), pk)
            return self.response(200, id=pk, result=backfills.backfill_dict(db.session, done))

        return call_service("cancel", "backfill", pk, run)
