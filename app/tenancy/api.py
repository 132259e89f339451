"""``/api/v1/tenants/`` and ``/api/v1/teams/`` (API.md, "Tenants and teams")."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app
from flask_appbuilder.api import expose, protect, safe
from flask_appbuilder.models.sqla.interface import SQLAInterface

from app.api_support import UuidModelApi, call_service, json_body
from app.errors import parse
from app.extensions import db
from app.models import Team, Tenant
from app.security.actor import Actor
from app.security.scope import ScopedMixin
from app.tenancy import service

READ_WRITE = {
    "get_list": "read", "get": "read", "info": "read",
    "post": "write", "put": "write", "delete": "write",
    "add_member": "write", "remove_member": "write",
}


class TenantApi(ScopedMixin, UuidModelApi):
    resource_name = "tenants"
    datamodel = SQLAInterface(Tenant)
    class_permission_name = "Tenants"
    method_permission_name = READ_WRITE
    allow_browser_login = True
    include_route_methods = {"get_list", "get", "post", "info"}
    list_columns = ["id", "name", "created_at"]
    show_columns = ["id", "name", "created_at"]
    order_columns = ["name", "created_at"]
    search_columns = ["name"]

    @expose("/", methods=["POST"])
    @protect()
    @safe
    def post(self) -> Response:
        """Create a tenant (Admin only).
        ---
        post:
          requestBody:
            content:
              application/json:
                schema: {type: object, properties: {name: {type: string}}}
          responses:
            201: {description: created}
            409: {description: duplicate name}
            422: {description: invalid body}
        """

        def run(actor: Actor) -> Response:
            data = parse(service.TenantIn, json_body())
            tenant = service.create_tenant(db.session, actor, data)
            return self.response(201, id=tenant.id, result=_tenant(tenant))

        return call_service("create", "tenant", None, run)


def _tenant(tenant: Tenant) -> dict[str, Any]:
    return {"id": tenant.id, "name": tenant.name, "created_at": tenant.created_at.isoformat()}


def _team(team: Team) -> dict[str, Any]:
    return {
        "id": team.id,
        "name": team.name,
        "tenant": team.tenant.name,
        "created_at": team.created_at.isoformat(),
        "members": service.members(db.session, team),
    }


class TeamApi(ScopedMixin, UuidModelApi):
    resource_name = "teams"
    datamodel = SQLAInterface(Team)
    class_permission_name = "Teams"
    method_permission_name = READ_WRITE
    allow_browser_login = True
    include_route_methods = {"get_list", "get", "post", "put", "delete", "info",
                             "add_member", "remove_member"}
    list_columns = ["id", "name", "tenant.name", "created_at"]
    show_columns = ["id", "name", "tenant.name", "created_at"]
    order_columns = ["name", "created_at"]
    search_columns = ["name", "tenant"]
    extra_show_fields = {
        "members": {"type": "array", "items": {"type": "string"}, "description": "usernames"},
    }

    def pre_get(self, data: dict[str, Any]) -> None:
        result = data.get("result", {})
        result["tenant"] = (result.get("tenant") or {}).get("name")
        team = db.session.get(Team, data.get("id"))
        result["members"] = service.members(db.session, team) if team else []

    def pre_get_list(self, data: dict[str, Any]) -> None:
        for item in data.get("result", []):
            item["tenant"] = (item.get("tenant") or {}).get("name")

    @expose("/", methods=["POST"])
    @protect()
    @safe
    def post(self) -> Response:
        """Create a team in a tenant (Admin only).
        ---
        post:
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties: {name: {type: string}, tenant: {type: string}}
          responses:
            201: {description: created}
            409: {description: duplicate name}
            422: {description: invalid body}
        """

        def run(actor: Actor) -> Response:
            data = parse(service.TeamIn, json_body())
            team = service.create_team(
                db.session, actor, data, current_app.config["DEFAULT_TENANT"]
            )
            return self.response(201, id=team.id, result=_team(team))

        return call_service("create", "team", None, run)

    @expose("/<pk>", methods=["PUT"])
    @protect()
    @safe
    def put(self, pk: str) -> Response:
        """Rename a team (Admin only).
        ---
        put:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          requestBody:
            content:
              application/json:
                schema: {type: object, properties: {name: {type: string}}}
          responses:
            200: {description: updated}
            404: {description: not found}
            422: {description: invalid body}
        """

        def run(actor: Actor) -> Response:
            data = parse(service.TeamUpdate, json_body())
            team = service.update_team(db.session, actor, pk, data)
            return self.response(200, id=team.id, result=_team(team))

        return call_service("update", "team", pk, run)

    @expose("/<pk>", methods=["DELETE"])
    @protect()
    @safe
    def delete(self, pk: str) -> Response:
        """Delete a team (Admin only).
        ---
        delete:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          responses:
            200: {description: deleted}
            404: {description: not found}
            409: {description: the team still owns rows}
        """

        def run(actor: Actor) -> Response:
            service.delete_team(db.session, actor, pk)
            return self.response(200, message="OK")

        return call_service("delete", "team", pk, run)

    @expose("/<pk>/members", methods=["POST"])
    @protect()
    @safe
    def add_member(self, pk: str) -> Response:
        """Add a user to a team (Admin only).
        ---
        post:
          parameters: [{in: path, name: pk, schema: {type: string}}]
          requestBody:
            content:
              application/json:
                schema: {type: object, properties: {username: {type: string}}}
          responses:
            201: {description: added}
            404: {description: team not found}
            409: {description: already a member}
            422: {description: unknown user}
        """

        def run(actor: Actor) -> Response:
            data = parse(service.MemberIn, json_body())
            membership = service.add_member(db.session, actor, pk, data)
            return self.response(
                201, id=membership.id, result={"team": pk, "username": data.username}
            )

        return call_service("create", "team_membership", pk, run)

    @expose("/<pk>/members/<username>", methods=["DELETE"])
    @protect()
    @safe
    def remove_member(self, pk: str, username: str) -> Response:
        """Remove a user from a team (Admin only).
        ---
        delete:
          parameters:
          - {in: path, name: pk, schema: {type: string}}
          - {in: path, name: username, schema: {type: string}}
          responses:
            200: {description: removed}
            404: {description: team or membership not found}
        """

        def run(actor: Actor) -> Response:
            service.remove_member(db.session, actor, pk, username)
            return self.response(200, message="OK")

        return call_service("delete", "team_membership", f"{pk}:{username}", run)
