"""``/api/v1/secrets/``: a team's workflow secrets (AGENTS.md, "Team secrets").

Authors of a team list, create, replace and delete its secrets; its Operators and
Viewers list the names; another team's secret is 404 (the row scope, ``ScopedMixin``);
Admin sees every team.

Thin over ``secrets.service``. A secret in a response is its id, team, name and who
saved it when: never its value nor the ciphertext, in no list, item, ``_info`` or
OpenAPI schema (the columns below are listed, never left to FAB's defaults).
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app
from flask_appbuilder.api import expose, protect, safe
from flask_appbuilder.models.sqla.interface import SQLAInterface
from marshmallow import Schema, fields

from app.api_support import UuidModelApi, call_service, json_body
from app.errors import parse
from app.extensions import db
from app.security.actor import Actor
from app.security.scope import ScopedMixin
from capability.models import Secret
from capability.secrets import service as secrets

PERMISSIONS = {"get_list": "read", "get": "read", "info": "read",
               "post": "write", "put": "write", "delete": "write"}
# What a response shows of a secret (``secrets.secret_dict`` for one item).
COLUMNS = ["id", "team.name", "name", "created_by", "updated_by", "created_at", "updated_at"]
VALUE = "the secret's value: stored encrypted, never shown again"
DESCRIPTIONS = {"team": "team name, or tenant/team", "name": "^[a-z][a-z0-9_]{0,62}$",
                "value": VALUE}


class SecretPostSchema(Schema):
    """The body of ``POST /api/v1/secrets/`` (validated by ``secrets.SecretIn``)."""

    team = fields.String(required=True, metadata={"description": DESCRIPTIONS["team"]})
    name = fields.String(required=True, metadata={"description": DESCRIPTIONS["name"]})
    value = fields.String(required=True, load_only=True, metadata={"description": VALUE})


class SecretPutSchema(Schema):
    """The body of ``PUT /api/v1/secrets/<id>``: a new value, nothing else."""

    value = fields.String(required=True, load_only=True, metadata={"description": VALUE})


class SecretApi(ScopedMixin, UuidModelApi):
    resource_name = "secrets"
    datamodel = SQLAInterface(Secret)
    class_permission_name = "Secrets"
    method_permission_name = PERMISSIONS
    allow_browser_login = True
    include_route_methods = set(PERMISSIONS)
    list_columns = COLUMNS
    show_columns = COLUMNS
    add_columns = ["team", "name", "value"]
    edit_columns = ["value"]
    label_columns = {"team.name": "Team", "value": "Value"}
    description_columns = DESCRIPTIONS
    add_model_schema = SecretPostSchema()
    edit_model_schema = SecretPutSchema()
    order_columns = ["name", "created_at", "updated_at"]
    search_columns = ["name", "team", "created_by", "updated_by"]
    base_order = ("name", "asc")

    def pre_get_list(self, data: dict[str, Any]) -> None:
        for item in data.get("result", []):
            item["team"] = (item.get("team") or {}).get("name")

    @expose("/<pk>", methods=["GET"])
    @protect()
    @safe
    def get(self, pk: str, **_: Any) -> Response:  # type: ignore[override]
        """A secret: its team, name and who saved it when (never its value).
        ---
        get:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: the secret, without its value}
            404: {description: not found}
        """

        def run(actor: Actor) -> Response:
            secret = secrets.get_secret(db.session, actor, pk)
            return self.response(200, id=pk, result=secrets.secret_dict(secret))

        return call_service("read", "secret", pk, run)

    @expose("/", methods=["POST"])
    @protect()
    @safe
    def post(self) -> Response:
        """Create a secret of a team: encrypted at once, never shown again.
        ---
        post:
          requestBody:
            required: true
            content:
              application/json:
                schema: {$ref: "#/components/schemas/SecretApi.post"}
          responses:
            201: {description: created (the response has no value)}
            409: {description: the team has a secret of that name}
            422: {description: "invalid body, unknown team or bad name: every error"}
        """

        def run(actor: Actor) -> Response:
            data = parse(secrets.SecretIn, json_body())
            secret = secrets.create_secret(db.session, actor, current_app.config, data)
            return self.response(201, id=secret.id, result=secrets.secret_dict(secret))

        return call_service("create", "secret", None, run)

    @expose("/<pk>", methods=["PUT"])
    @protect()
    @safe
    def put(self, pk: str) -> Response:
        """Give a secret a new value (its team and name do not change).
        ---
        put:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          requestBody:
            required: true
            content:
              application/json:
                schema: {$ref: "#/components/schemas/SecretApi.put"}
          responses:
            200: {description: updated (the response has no value)}
            404: {description: not found}
            422: {description: invalid body}
        """

        def run(actor: Actor) -> Response:
            data = parse(secrets.SecretValueIn, json_body())
            secret = secrets.update_secret(db.session, actor, current_app.config, pk, data)
            return self.response(200, id=pk, result=secrets.secret_dict(secret))

        return call_service("update", "secret", pk, run)

    @expose("/<pk>", methods=["DELETE"])
    @protect()
    @safe
    def delete(self, pk: str) -> Response:
        """Delete a secret (runs that read it afterwards fail: unknown secret).
        ---
        delete:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: deleted}
            404: {description: not found}
        """

        def run(actor: Actor) -> Response:
            secrets.delete_secret(db.session, actor, pk)
            return self.response(200, message="OK")

        return call_service("delete", "secret", pk, run)
