"""Workflows -> Connections: the pages (CONNECTORS.md, "UI").

Thin over ``connections.service`` with the request's actor: the list of your teams'
connections with their breaker, a form made from the chosen type's own models (the
JSON Schema ``/api/v1/connections/types`` gives), "Test" (a real round trip) and
delete. Secret fields are password inputs that are never filled back: left empty on an
edit, a secret keeps its value.
"""

from __future__ import annotations

import builtins
import json
from typing import Any

from flask import current_app, flash, redirect, request, url_for
from flask_appbuilder import BaseView
from flask_appbuilder.security.decorators import has_access, permission_name
from flask_appbuilder.views import expose
from sqlalchemy import select
from werkzeug.wrappers import Response

from app.api_support import call_for_page
from app.errors import ServiceError, parse
from app.extensions import db
from app.models import Team
from app.runtime.redis_conn import get_redis
from app.security.request import request_actor
from app.security.scope import scoped
from capability.connections import service as connections
from capability.engine.settings import EngineSettings


def _settings() -> EngineSettings:
    return EngineSettings.from_config(current_app.config)


def _author_teams() -> list[str]:
    """The teams whose connections the actor may create (the service's rule)."""
    actor = request_actor()
    teams = db.session.execute(scoped(select(Team), Team, actor).order_by(Team.name))
    return [t.name for t in teams.scalars().unique() if connections.may_manage(actor, t.id)]


def _kind(prop: dict[str, Any]) -> str:
    """How a form shows a field of a type's JSON Schema."""
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    node = branches[0] if branches else prop
    if "enum" in node:
        return "select"
    return {"boolean": "checkbox", "integer": "number", "number": "number",
            "object": "json", "array": "json"}.get(str(node.get("type")), "text")


def fields_of(schema: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A schema's properties as form fields: name, kind, required, default, help, choices."""
    if not schema:
        return []
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        kind = _kind(prop)
        branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
        out.append({"name": name, "kind": kind, "required": name in required,
                    "default": prop.get("default"), "help": prop.get("description", ""),
                    "choices": (branches[0].get("enum") if branches else None) or []})
    return out


def _value(field: dict[str, Any], raw: str | None, errors: list[dict[str, str]],
           where: str) -> Any:
    """A form value as the type's model expects it (None: not given)."""
    if field["kind"] == "checkbox":
        return raw is not None
    if raw is None or raw.strip() == "":
        return None
    if field["kind"] == "number":
        try:
            return int(raw) if raw.strip().lstrip("-").isdigit() else float(raw)
        except ValueError:
            errors.append({"path": f"{where}.{field['name']}", "message": "a number"})
            return None
    if field["kind"] == "json":
        try:
            return json.loads(raw)
        except ValueError as exc:
            errors.append({"path": f"{where}.{field['name']}", "message": f"not JSON: {exc}"})
            return None
    return raw


def _read(fields: list[dict[str, Any]], prefix: str,
          errors: list[dict[str, str]]) -> dict[str, Any]:
    out = {}
    for field in fields:
        value = _value(field, request.form.get(f"{prefix}.{field['name']}"), errors, prefix)
        if value is not None:
            out[field["name"]] = value
    return out


def _errors(exc: ServiceError) -> list[dict[str, str]]:
    return list(getattr(exc, "errors", []) or []) or [{"path": "", "message": str(exc)}]


def _type_of(name: str | None) -> dict[str, Any] | None:
    return next((t for t in connections.types() if t["type"] == name), None)


class ConnectionView(BaseView):
    route_base = "/connections"
    default_view = "list"
    class_permission_name = "Connections"
    method_permission_name = {"list": "read", "add": "write", "edit": "write",
                              "test": "write", "delete": "write"}

    @expose("/")
    @has_access
    @permission_name("read")
    def list(self) -> str:
        actor = request_actor()
        found = connections.list_connections(db.session, actor)
        items = [{**shown, "may_manage": connections.may_manage(actor, c.team_id)}
                 for c, shown in zip(found, connections.shown(get_redis(current_app), found),
                                     strict=True)]
        return self.render_template("connections/list.html", items=items,
                                    may_add=bool(_author_teams()))

    # ``list`` is a page of this class: the annotations name the builtin explicitly.
    def _form(self, title: str, kind: dict[str, Any], values: dict[str, Any],
              errors: builtins.list[dict[str, str]], editing: bool,
              teams: builtins.list[str]) -> str:
        return self.render_template(
            "connections/form.html", title=title, kind=kind, values=values, errors=errors,
            editing=editing, teams=teams, config_fields=fields_of(kind["config"]),
            secret_fields=fields_of(kind["secret"]), types=connections.types())

    @expose("/new", methods=["GET", "POST"])
    @has_access
    @permission_name("write")
    def add(self) -> str | Response:
        teams = _author_teams()
        if not teams:
            flash("Only an Author of a team may create its connections.", "danger")
            return redirect(url_for("ConnectionView.list"))
        kind = _type_of(request.values.get("type"))
        if kind is None:
            return self.render_template("connections/choose.html", types=connections.types())
        errors: list[dict[str, str]] = []
        values: dict[str, Any] = {"team": teams[0], "name": "", "description": "",
                                  "config": {}}
        if request.method == "POST":
            config = _read(fields_of(kind["config"]), "config", errors)
            secret = _read(fields_of(kind["secret"]), "secret", errors)
            values = {"team": request.form.get("team", ""), "name": request.form.get("name", ""),
                      "description": request.form.get("description", ""), "config": config}
            if not errors:
                try:
                    made = call_for_page("create", "connection", None, lambda actor: (
                        connections.create_connection(db.session, actor, _settings(), parse(
                            connections.ConnectionIn,
                            {**values, "type": kind["type"], "secret": secret}))),
                        missing="not in your teams.", forbidden=True)
                    flash(f"Connection {made.name!r} saved. Test it to check it answers.",
                          "success")
                    return redirect(url_for("ConnectionView.list"))
                except ServiceError as exc:
                    errors += _errors(exc)
        return self._form(f"New {kind['type']} connection", kind, values, errors, False,
                          teams)

    @expose("/<pk>/edit", methods=["GET", "POST"])
    @has_access
    @permission_name("write")
    def edit(self, pk: str) -> str | Response:
        found = call_for_page("read", "connection", pk, lambda actor: (
            connections.get_connection(db.session, actor, pk)), missing="not in your teams.",
            forbidden=True)
        kind = _type_of(found.type)
        if kind is None:
            flash(f"Connection type {found.type!r} is not installed.", "danger")
            return redirect(url_for("ConnectionView.list"))
        errors: list[dict[str, str]] = []
        values: dict[str, Any] = {"team": found.team.name, "name": found.name,
                                  "description": found.description,
                                  "config": dict(found.config)}
        if request.method == "POST":
            config = _read(fields_of(kind["config"]), "config", errors)
            secret = _read(fields_of(kind["secret"]), "secret", errors)
            values.update(config=config, description=request.form.get("description", ""))
            if not errors:
                try:
                    call_for_page("update", "connection", pk, lambda actor: (
                        connections.update_connection(
                            db.session, actor, _settings(), pk, connections.ConnectionUpdate(
                                config=config, secret=secret,
                                description=str(values["description"])))),
                        missing="not in your teams.", forbidden=True)
                    flash(f"Connection {found.name!r} saved.", "success")
                    return redirect(url_for("ConnectionView.list"))
                except ServiceError as exc:
                    errors += _errors(exc)
        return self._form(f"Connection {found.name}", kind, values, errors, True,
                          [found.team.name])

    @expose("/<pk>/test", methods=["POST"])
    @has_access
    @permission_name("write")
    def test(self, pk: str) -> Response:
        result = call_for_page("test", "connection", pk, lambda actor: (
            connections.test_connection(db.session, actor, _settings(), pk)),
            missing="not in your teams.", forbidden=True)
        verdict = "answered" if result["ok"] else "failed"
        flash(f"Test {verdict} in {result['took_ms']} ms: {result['message']}",
              "success" if result["ok"] else "danger")
        return redirect(url_for("ConnectionView.list"))

    @expose("/<pk>/delete", methods=["POST"])
    @has_access
    @permission_name("write")
    def delete(self, pk: str) -> Response:
        call_for_page("delete", "connection", pk, lambda actor: (
            connections.delete_connection(db.session, actor, pk)),
            missing="not in your teams.", forbidden=True)
        flash("Connection deleted: tasks naming it fail from now on.", "success")
        return redirect(url_for("ConnectionView.list"))
