"""API keys on the web: the request hook that signs a keyed call in, ``/api/v1/api-keys/``
and the page under the user menu. Thin over ``app.security.api_keys``."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, flash, g, jsonify, redirect, request, url_for
from flask_appbuilder import BaseView
from flask_appbuilder.api import BaseApi, expose, protect, safe
from flask_appbuilder.security.decorators import has_access, permission_name
from flask_appbuilder.views import expose as expose_view
from sqlalchemy import select

from app.api_support import call_service, json_body
from app.audit.recorder import build_event, record
from app.audit.web import mark_audited
from app.errors import ServiceError, parse
from app.extensions import db
from app.models import Team, TeamMembership
from app.security import api_keys
from app.security.actor import Actor
from app.security.request import client_ip, request_actor, request_id

KEY_USE = "apg_key_use"
_RATE = "apg_key_rate"
# Paths a key signs in to here; /mcp checks keys itself (capability.mcp).
KEYED_PATHS = ("/api/",)


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() != "bearer ":
        return None
    token = header[7:].strip()
    return token if token.startswith(api_keys.TOKEN_PREFIX) else None


def record_refusal(exc: api_keys.KeyRefused) -> None:
    """A refused key, in the trail: who tried is the key's user when the key was
    genuine (the REST API here, the MCP endpoint)."""
    db.session.rollback()
    username = "anonymous"
    if exc.user_id is not None:
        user = current_app.appbuilder.sm.get_user_by_id(exc.user_id)  # type: ignore[attr-defined]
        username = user.username if user is not None else username
    actor = Actor(username=username, user_id=exc.user_id, ip=client_ip(),
                  request_id=request_id())
    record(db.session, build_event(actor, "api_key_use", "api_key", exc.key_id,
                                   outcome="denied",
                                   after={"reason": exc.reason, "method": request.method,
                                          "path": request.path}))
    db.session.commit()
    mark_audited()


def _refused(exc: api_keys.KeyRefused) -> Response:
    record_refusal(exc)
    response = jsonify({"message": exc.reason})
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def sign_in() -> Response | None:
    """Before every request: a keyed API call acts as the key's user from here on."""
    token = _bearer()
    if token is None or not request.path.startswith(KEYED_PATHS):
        return None
    try:
        use = api_keys.authenticate(db.session, token, client_ip())
        state = api_keys.check_rate(use)
    except api_keys.KeyRefused as exc:
        return _refused(exc)
    except api_keys.RateLimited as exc:
        response = jsonify({"message": f"Rate limit of this API key exceeded "
                                       f"({current_app.config.get('API_KEY_RATE_LIMIT')}); "
                                       f"retry in {exc.retry_after} s"})
        response.status_code = 429
        response.headers.update(exc.state.headers())
        response.headers["Retry-After"] = str(exc.retry_after)
        g.apg_audited = True  # a flood of 429s is logged, not a trail of events
        return response
    user = current_app.appbuilder.sm.get_user_by_id(use.user_id)  # type: ignore[attr-defined]
    g.user = user
    g._api_key_user = True  # FAB's own marker: its checks then read g.user
    setattr(g, KEY_USE, use)
    setattr(g, _RATE, state)
    return None


def key_use() -> api_keys.KeyUse | None:
    return g.get(KEY_USE)


def _rate_headers(response: Response) -> Response:
    state = g.get(_RATE)
    if state is not None:
        response.headers.update(state.headers())
    return response


def init_app(app: Flask) -> None:
    app.before_request(sign_in)
    app.after_request(_rate_headers)


# ------------------------------------------------------------------- REST

PERMISSIONS = {"get_list": "read", "post": "write", "delete": "write"}


class ApiKeyApi(BaseApi):
    resource_name = "api-keys"
    class_permission_name = "ApiKeys"
    method_permission_name = PERMISSIONS
    allow_browser_login = True
    openapi_spec_tag = "API keys"

    @expose("/", methods=["GET"])
    @protect()
    @safe
    def get_list(self) -> Response:
        """Your API keys (Admin: everyone's); never the key itself.
        ---
        get:
          responses:
            200: {description: "`result`: the keys"}
        """

        def run(actor: Actor) -> Response:
            keys = api_keys.list_keys(db.session, actor)
            return self.response(200, count=len(keys),
                                 result=[api_keys.key_dict(db.session, k) for k in keys])

        return call_service("list", "api_key", None, run)

    @expose("/", methods=["POST"])
    @protect()
    @safe
    def post(self) -> Response:
        """Make a key: `{name, scopes, teams?, expires_at?, allowed_ips?}`. The key is in
        this answer only.
        ---
        post:
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    name: {type: string}
                    scopes: {type: array, items: {type: string, enum: [read, run, author]}}
                    teams: {type: array, items: {type: string}}
                    expires_at: {type: string, format: date-time}
                    allowed_ips: {type: array, items: {type: string}}
          responses:
            201: {description: "`result.key`: the key, shown once"}
            403: {description: asked through a key}
            422: {description: invalid body}
        """

        def run(actor: Actor) -> Response:
            data = parse(api_keys.KeyIn, json_body())
            key, token = api_keys.create_key(db.session, actor, data)
            result = api_keys.key_dict(db.session, key)
            _audit(actor, "create", key, result)
            return self.response(201, id=key.id, result={**result, "key": token})

        return call_service("create", "api_key", None, run)

    @expose("/<key_id>", methods=["DELETE"])
    @protect()
    @safe
    def delete(self, key_id: str) -> Response:
        """Revoke a key, at once, on every process.
        ---
        delete:
          parameters:
          - {in: path, name: key_id, required: true, schema: {type: string}}
          responses:
            200: {description: revoked}
            404: {description: not yours, or no such key}
        """

        def run(actor: Actor) -> Response:
            key = api_keys.revoke_key(db.session, actor, key_id)
            result = api_keys.key_dict(db.session, key)
            _audit(actor, "revoke", key, result)
            return self.response(200, id=key.id, result=result)

        return call_service("revoke", "api_key", key_id, run)


def _audit(actor: Actor, action: str, key: Any, result: dict[str, Any]) -> None:
    record(db.session, build_event(actor, action, "api_key", key.id, after={
        k: result[k] for k in ("name", "prefix", "user", "scopes", "teams", "allowed_ips",
                               "expires_at", "revoked_at")}))
    db.session.commit()
    mark_audited()


# ------------------------------------------------------------------- the page

class ApiKeyView(BaseView):
    """User menu -> API keys: make one (shown once, with a copy button), revoke one."""

    route_base = "/api-keys"
    default_view = "list"
    class_permission_name = "ApiKeys"
    method_permission_name = {"list": "read", "create": "write", "revoke": "write"}

    def _page(self, actor: Actor, token: str | None = None, errors: Any = None,
              form: dict[str, Any] | None = None, status: int = 200) -> Any:
        keys = [api_keys.key_dict(db.session, k) for k in api_keys.list_keys(db.session, actor)]
        usable = api_keys.capped_roles(actor.roles, frozenset(api_keys.SCOPES))
        scopes = [s for s in api_keys.SCOPES if api_keys.SCOPE_ROLE[s] in usable]
        teams = _teams_of(actor)
        return self.render_template(
            "security/api_keys.html", keys=keys, token=token, errors=errors or [],
            form=form or {}, scopes=scopes, teams=teams, show_owner=actor.is_admin,
        ), status

    @expose_view("/")
    @has_access
    @permission_name("read")
    def list(self) -> Any:
        return self._page(request_actor())

    @expose_view("/create", methods=["POST"])
    @has_access
    @permission_name("write")
    def create(self) -> Any:
        actor = request_actor()
        form = request.form
        payload: dict[str, Any] = {
            "name": form.get("name", ""),
            "scopes": form.getlist("scopes"),
            "teams": form.getlist("teams"),
            "allowed_ips": [ip.strip() for ip in form.get("allowed_ips", "").replace(
                "\n", ",").split(",") if ip.strip()],
        }
        if form.get("expires_at"):
            payload["expires_at"] = form["expires_at"]
        kept = {"name": payload["name"], "scopes": payload["scopes"],
                "teams": payload["teams"], "allowed_ips": form.get("allowed_ips", ""),
                "expires_at": form.get("expires_at", "")}
        try:
            data = parse(api_keys.KeyIn, payload)
            key, token = api_keys.create_key(db.session, actor, data)
            _audit(actor, "create", key, api_keys.key_dict(db.session, key))
        except ServiceError as exc:
            from app.api_support import audit_failure

            audit_failure(actor, exc, "create", "api_key", None)
            return self._page(actor, errors=exc.errors or [{"path": "", "message": exc.message}],
                              form=kept, status=exc.status)
        return self._page(actor, token=token)

    @expose_view("/<key_id>/revoke", methods=["POST"])
    @has_access
    @permission_name("write")
    def revoke(self, key_id: str) -> Any:
        actor = request_actor()
        try:
            key = api_keys.revoke_key(db.session, actor, key_id)
            _audit(actor, "revoke", key, api_keys.key_dict(db.session, key))
            flash(f"API key {key.name} ({key.prefix}) revoked", "success")
        except ServiceError as exc:
            from app.api_support import audit_failure

            audit_failure(actor, exc, "revoke", "api_key", key_id)
            flash(exc.message, "danger")
        return redirect(url_for("ApiKeyView.list"))


def _teams_of(actor: Actor) -> list[tuple[str, str]]:
    stmt = select(Team.id, Team.name).order_by(Team.name)
    if not actor.is_admin:
        stmt = stmt.join(TeamMembership, TeamMembership.team_id == Team.id).where(
            TeamMembership.user_id == actor.user_id)
    return [(r[0], r[1]) for r in db.session.execute(stmt).all()]
