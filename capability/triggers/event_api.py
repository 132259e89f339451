"""``/api/v1/event-triggers/`` and ``POST /api/v1/events/<name>`` (TRIGGERS.md,
"Events"): thin over ``triggers.events``."""

from __future__ import annotations

from flask import Response, current_app, request
from flask_appbuilder.api import BaseApi, expose, protect, safe

from app.api_support import call_service, json_body
from app.errors import parse
from app.extensions import db
from app.security.actor import Actor
from capability.engine.dispatch import dispatcher_for
from capability.triggers import events


class EventTriggerApi(BaseApi):
    resource_name = "event-triggers"
    class_permission_name = "EventTriggers"
    method_permission_name = {"get_list": "read", "get": "read", "post": "write",
                              "put": "write", "delete": "write"}
    allow_browser_login = True

    @expose("/", methods=["GET"])
    @protect()
    @safe
    def get_list(self) -> Response:
        """Event triggers of your teams (filter: workflow).
        ---
        get:
          responses:
            200: {description: "count and result: event triggers"}
        """

        def run(actor: Actor) -> Response:
            found = events.list_triggers(db.session, actor, request.args.get("workflow"))
            return self.response(200, count=len(found),
                                 result=[events.trigger_dict(t) for t in found])

        return call_service("read", "event_trigger", None, run)

    @expose("/<pk>", methods=["GET"])
    @protect()
    @safe
    def get(self, pk: str) -> Response:
        """One event trigger, with why it last started nothing.
        ---
        get:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: the event trigger}
            404: {description: not found}
        """
        return call_service("read", "event_trigger", pk, lambda actor: self.response(
            200, id=pk, result=events.trigger_dict(events.get_trigger(db.session, actor, pk))))

    @expose("/", methods=["POST"])
    @protect()
    @safe
    def post(self) -> Response:
        """Create an event trigger (Author of the team).
        ---
        post:
          responses:
            201: {description: created}
            422: {description: every error, by field}
        """

        def run(actor: Actor) -> Response:
            data = parse(events.EventTriggerIn, json_body())
            trigger = events.create_trigger(db.session, actor, data)
            return self.response(201, id=trigger.id, result=events.trigger_dict(trigger))

        return call_service("create", "event_trigger", None, run)

    @expose("/<pk>", methods=["PUT"])
    @protect()
    @safe
    def put(self, pk: str) -> Response:
        """Replace an event trigger.
        ---
        put:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: updated}
            404: {description: not found}
            422: {description: every error, by field}
        """

        def run(actor: Actor) -> Response:
            data = parse(events.EventTriggerIn, json_body())
            trigger = events.update_trigger(db.session, actor, pk, data)
            return self.response(200, id=pk, result=events.trigger_dict(trigger))

        return call_service("update", "event_trigger", pk, run)

    @expose("/<pk>", methods=["DELETE"])
    @protect()
    @safe
    def delete(self, pk: str) -> Response:
        """Delete an event trigger.
        ---
        delete:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: deleted}
            404: {description: not found}
        """

        def run(actor: Actor) -> Response:
            events.delete_trigger(db.session, actor, pk)
            return self.response(200, message="OK")

        return call_service("delete", "event_trigger", pk, run)


class EventApi(BaseApi):
    resource_name = "events"
    class_permission_name = "Events"
    method_permission_name = {"post_event": "post"}
    allow_browser_login = True

    @expose("/<name>", methods=["POST"])
    @protect()
    @safe
    def post_event(self, name: str) -> Response:
        """Post a named event of a team: the runs of its triggers start (Operator or
        above in that team).
        ---
        post:
          parameters: [{in: path, name: name, schema: {type: string}}]
          responses:
            202: {description: "runs: the ids of the runs started"}
            422: {description: bad name, unknown team, bad body}
        """

        def run(actor: Actor) -> Response:
            data = parse(events.EventIn, json_body())
            started = events.publish(db.session, actor, dispatcher_for(current_app), name,
                                     data, int(current_app.config.get("EVENT_MAX_DEPTH") or 10))
            return self.response(202, runs=started)

        return call_service("post", "event", name, run)
