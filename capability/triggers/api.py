"""``/api/v1/schedules/`` (TRIGGERS.md, "Schedules"): thin over ``triggers.service``."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request
from flask_appbuilder.api import BaseApi, expose, protect, safe
from pydantic import BaseModel, ConfigDict, Field

from app.api_support import call_service, json_body
from app.errors import parse
from app.extensions import db
from app.security.actor import Actor
from capability.triggers import backfills
from capability.triggers import service as schedules


class ListIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    workflow: str | None = Field(default=None, max_length=36)
    workflow_id: str | None = Field(default=None, max_length=36)
    team: str | None = Field(default=None, max_length=129)
    enabled: bool | None = None


class PageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    page: int = Field(default=0, ge=0, le=100000)
    page_size: int = Field(default=100, ge=1, le=500)


class ScheduleApi(BaseApi):
    resource_name = "schedules"
    class_permission_name = "Schedules"
    method_permission_name = {
        "get_list": "read", "get": "read", "ticks": "read", "preview": "read",
        "post": "write", "put": "write", "delete": "write",
        "pause": "control", "resume": "control", "backfill": "control",
    }
    allow_browser_login = True

    def _answer(self, status: int, schedule: Any) -> Response:
        return self.response(status, id=schedule.id,
                             result=schedules.schedule_dict(db.session, schedule))

    @expose("/", methods=["GET"])
    @protect()
    @safe
    def get_list(self) -> Response:
        """Schedules of your teams (filters: workflow, team, enabled).
        ---
        get:
          responses:
            200: {description: "count and result: schedules"}
            422: {description: a bad filter}
        """

        def run(actor: Actor) -> Response:
            args = parse(ListIn, dict(request.args))
            found = schedules.list_schedules(
                db.session, actor, args.workflow_id or args.workflow, args.team, args.enabled)
            return self.response(200, count=len(found), result=[
                schedules.schedule_dict(db.session, s) for s in found])

        return call_service("read", "schedule", None, run)

    @expose("/<pk>", methods=["GET"])
    @protect()
    @safe
    def get(self, pk: str) -> Response:
        """One schedule, with its next five fire times and its last tick.
        ---
        get:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: the schedule}
            404: {description: not found}
        """
        return call_service("read", "schedule", pk, lambda actor: self._answer(
            200, schedules.get_schedule(db.session, actor, pk)))

    @expose("/", methods=["POST"])
    @protect()
    @safe
    def post(self) -> Response:
        """Create a schedule (Author of the workflow's team).
        ---
        post:
          responses:
            201: {description: created}
            422: {description: "every error, by field (cron, timezone, params...)"}
        """

        def run(actor: Actor) -> Response:
            data = parse(schedules.ScheduleIn, json_body())
            return self._answer(201, schedules.create_schedule(db.session, actor, data))

        return call_service("create", "schedule", None, run)

    @expose("/<pk>", methods=["PUT"])
    @protect()
    @safe
    def put(self, pk: str) -> Response:
        """Replace a schedule (the whole body, as for POST).
        ---
        put:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: updated}
            404: {description: not found}
            422: {description: every error, by field}
        """

        def run(actor: Actor) -> Response:
            data = parse(schedules.ScheduleIn, json_body())
            return self._answer(200, schedules.update_schedule(db.session, actor, pk, data))

        return call_service("update", "schedule", pk, run)

    @expose("/<pk>", methods=["DELETE"])
    @protect()
    @safe
    def delete(self, pk: str) -> Response:
        """Delete a schedule (its ledger goes with it; its runs stay).
        ---
        delete:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: deleted}
            404: {description: not found}
        """

        def run(actor: Actor) -> Response:
            schedules.delete_schedule(db.session, actor, pk)
            return self.response(200, message="OK")

        return call_service("delete", "schedule", pk, run)

    @expose("/<pk>/pause", methods=["POST"])
    @protect()
    @safe
    def pause(self, pk: str) -> Response:
        """Pause: no tick is decided until resumed (Operator or Author).
        ---
        post:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: paused}
            404: {description: not found}
        """
        return call_service("pause", "schedule", pk, lambda actor: self._answer(
            200, schedules.set_paused(db.session, actor, pk, True)))

    @expose("/<pk>/resume", methods=["POST"])
    @protect()
    @safe
    def resume(self, pk: str) -> Response:
        """Resume from now (what fell due while paused is not caught up).
        ---
        post:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: resumed}
            404: {description: not found}
        """
        return call_service("resume", "schedule", pk, lambda actor: self._answer(
            200, schedules.set_paused(db.session, actor, pk, False)))

    @expose("/<pk>/ticks", methods=["GET"])
    @protect()
    @safe
    def ticks(self, pk: str) -> Response:
        """The tick ledger, newest first (page, page_size).
        ---
        get:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: "count, and result: the ledger rows"}
            404: {description: not found}
        """

        def run(actor: Actor) -> Response:
            page = parse(PageIn, dict(request.args))
            total, rows = schedules.ticks(db.session, actor, pk, page.page_size,
                                          page.page * page.page_size)
            return self.response(200, count=total,
                                 result=[schedules.tick_dict(t) for t in rows])

        return call_service("read", "schedule", pk, run)

    @expose("/preview", methods=["POST"])
    @protect()
    @safe
    def preview(self) -> Response:
        """The next fire times of a cron in a zone; nothing is created.
        ---
        post:
          responses:
            200: {description: "fire_times: ISO instants with the zone's offset"}
            422: {description: every error, by field}
        """

        def run(actor: Actor) -> Response:
            data = parse(schedules.PreviewIn, json_body())
            return self.response(200, fire_times=schedules.preview(data))

        return call_service("preview", "schedule", None, run)

    @expose("/<pk>/backfill", methods=["POST"])
    @protect()
    @safe
    def backfill(self, pk: str) -> Response:
        """Runs for the schedule's ticks in [start, end] (Operator or Author);
        ``dry_run: true`` only counts them.
        ---
        post:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            201: {description: "id and ticks (the count)"}
            200: {description: "dry run: ticks, nothing created"}
            404: {description: not found}
            422: {description: "more ticks than max_runs (the message says how many), bad range"}
        """

        def run(actor: Actor) -> Response:
            data = parse(backfills.BackfillIn, json_body())
            made, ticks = backfills.create_backfill(
                db.session, actor, pk, data, int(current_app.config.get("BACKFILL_MAX") or 1000))
            if made is None:
                return self.response(200, ticks=ticks, dry_run=True)
            return self.response(201, id=made.id, ticks=ticks)

        return call_service("backfill", "schedule", pk, run)
