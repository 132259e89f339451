"""``/api/v1/connections/`` (CONNECTORS.md, "Connections"): thin over
``connections.service``. No response carries a secret value: the secret fields read
back as ``"***"``."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app
from flask_appbuilder.api import BaseApi, expose, protect, safe

from app.api_support import call_service, json_body
from app.errors import parse
from app.extensions import db
from app.runtime.redis_conn import get_redis
from app.security.actor import Actor
from capability.connections import service as connections
from capability.engine.settings import EngineSettings


def _settings() -> EngineSettings:
    return EngineSettings.from_config(current_app.config)


def _redis() -> Any:
    return get_redis(current_app)


class ConnectionApi(BaseApi):
    resource_name = "connections"
    class_permission_name = "Connections"
    method_permission_name = {
        "get_list": "read", "get": "read", "types": "read",
        "post": "write", "put": "write", "delete": "write", "test": "write",
    }
    allow_browser_login = True

    @expose("/", methods=["GET"])
    @protect()
    @safe
    def get_list(self) -> Response:
        """Connections of your teams: names, types, non-secret config.
        ---
        get:
          responses:
            200: {description: "count and result: connections (secret fields as ***)"}
        """

        def run(actor: Actor) -> Response:
            found = connections.list_connections(db.session, actor)
            return self.response(200, count=len(found), result=connections.shown(_redis(), found))

        return call_service("read", "connection", None, run)

    @expose("/types", methods=["GET"])
    @protect()
    @safe
    def types(self) -> Response:
        """Every connection type, with the JSON Schema of its config and secret fields.
        ---
        get:
          responses:
            200: {description: "result: [{type, description, config, secret}]"}
        """
        return call_service("read", "connection", None, lambda actor: self.response(
            200, result=connections.types()))

    @expose("/<pk>", methods=["GET"])
    @protect()
    @safe
    def get(self, pk: str) -> Response:
        """One connection (secret fields as ***).
        ---
        get:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: the connection}
            404: {description: not found}
        """
        return call_service("read", "connection", pk, lambda actor: self.response(
            200, id=pk, result=connections.shown(
                _redis(), [connections.get_connection(db.session, actor, pk)])[0]))

    @expose("/", methods=["POST"])
    @protect()
    @safe
    def post(self) -> Response:
        """Create a connection (Author of its team): secret fields encrypted at once.
        ---
        post:
          responses:
            201: {description: "created (secret fields as ***)"}
            409: {description: the team has a connection of that name}
            422: {description: "every error, by field (config.host, secret.password...)"}
        """

        def run(actor: Actor) -> Response:
            data = parse(connections.ConnectionIn, json_body())
            made = connections.create_connection(db.session, actor, _settings(), data)
            return self.response(201, id=made.id, result=connections.shown(_redis(), [made])[0])

        return call_service("create", "connection", None, run)

    @expose("/<pk>", methods=["PUT"])
    @protect()
    @safe
    def put(self, pk: str) -> Response:
        """Change a connection's config, description or secret fields (those left out
        keep their values).
        ---
        put:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: updated}
            404: {description: not found}
            422: {description: every error, by field}
        """

        def run(actor: Actor) -> Response:
            data = parse(connections.ConnectionUpdate, json_body())
            found = connections.update_connection(db.session, actor, _settings(), pk, data)
            return self.response(200, id=pk, result=connections.shown(_redis(), [found])[0])

        return call_service("update", "connection", pk, run)

    @expose("/<pk>", methods=["DELETE"])
    @protect()
    @safe
    def delete(self, pk: str) -> Response:
        """Delete a connection: tasks naming it fail from now on (unknown connection).
        ---
        delete:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: deleted}
            404: {description: not found}
        """

        def run(actor: Actor) -> Response:
            connections.delete_connection(db.session, actor, pk)
            return self.response(200, message="OK")

        return call_service("delete", "connection", pk, run)

    @expose("/<pk>/test", methods=["POST"])
    @protect()
    @safe
    def test(self, pk: str) -> Response:
        """A real round trip to the outside system: {ok, message, took_ms}.
        ---
        post:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: "ok, message (the system's own), took_ms"}
            404: {description: not found}
        """
        return call_service("test", "connection", pk, lambda actor: self.response(
            200, **connections.test_connection(db.session, actor, _settings(), pk)))
