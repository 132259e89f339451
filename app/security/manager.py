"""Our FAB security manager: audited logins and logouts, rate-limited API login."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, g, has_request_context, jsonify, make_response
from flask_appbuilder.security.sqla import apis as fab_apis
from flask_appbuilder.security.sqla.manager import SecurityManager
from flask_jwt_extended import JWTManager
from flask_login import LoginManager, user_logged_in
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from app.api_support import QueryExamplesMixin
from app.audit.recorder import build_event, record
from app.audit.web import mark_audited
from app.security import access, login_limits, revocation
from app.security.actor import Actor
from app.security.auth_views import AuthDBView
from app.security.login_api import ApgSecurityApi
from app.security.request import client_ip, request_id

log = logging.getLogger(__name__)
# (database, role name) -> role id, for keyed requests' permission checks.
_ROLE_IDS: dict[tuple[str, str], int] = {}


def _unauthorized(reason: str) -> Response:
    return make_response(jsonify({"message": reason}), 401)


# FAB's security APIs with an example of ``q`` that works in Swagger's "Try it out"
# (see QueryExamplesMixin). Same class names: FAB derives endpoints from them.
class PermissionApi(QueryExamplesMixin, fab_apis.PermissionApi):
    pass


class RoleApi(QueryExamplesMixin, fab_apis.RoleApi):
    pass


class UserApi(QueryExamplesMixin, fab_apis.UserApi):
    pass


class ViewMenuApi(QueryExamplesMixin, fab_apis.ViewMenuApi):
    pass


class PermissionViewMenuApi(QueryExamplesMixin, fab_apis.PermissionViewMenuApi):
    pass


class GroupApi(QueryExamplesMixin, fab_apis.GroupApi):
    pass


def _stamp_session(_sender: Any, user: Any, **_extra: Any) -> None:
    # Flask-Login's signal, sent by every form login (db, LDAP, OAuth...).
    from app.extensions import db

    revocation.stamp_session(user.id, db.session)


class ApgSecurityManager(SecurityManager):
    # The API login: a missing provider means "db"; a malformed body is a 400/422.
    security_api = ApgSecurityApi
    # The form login answers a lockout with 429; logout is a POST.
    authdbview = AuthDBView
    permission_api = PermissionApi
    role_api = RoleApi
    user_api = UserApi
    view_menu_api = ViewMenuApi
    permission_view_menu_api = PermissionViewMenuApi
    group_api = GroupApi

    def create_jwt_manager(self, app: Flask) -> JWTManager:
        """Token errors answer 401 with ``message`` like every other error of the API
        (flask-jwt-extended's defaults are ``{"msg"}`` and 422 for a malformed token)."""
        manager = super().create_jwt_manager(app)
        manager.unauthorized_loader(lambda reason: _unauthorized(f"Not authenticated: {reason}"))
        manager.invalid_token_loader(lambda reason: _unauthorized(f"Invalid token: {reason}"))
        manager.expired_token_loader(lambda _h, _p: _unauthorized("Token has expired"))
        manager.revoked_token_loader(lambda _h, _p: _unauthorized("Token has been revoked"))
        manager.user_lookup_error_loader(lambda _h, _p: _unauthorized("Unknown or inactive user"))
        # Revocation: every token carries its user's credentials generation, and one of
        # an older generation is refused ("Token has been revoked").
        manager.additional_claims_loader(self._token_claims)
        manager.token_in_blocklist_loader(
            lambda _h, payload: not revocation.is_current(
                payload.get("sub"), payload.get(revocation.JWT_CLAIM), self.session)
        )
        return manager

    def _token_claims(self, identity: Any) -> dict[str, Any]:
        try:
            user_id = int(identity)
        except (TypeError, ValueError):
            return {}
        return {revocation.JWT_CLAIM: revocation.generation(self.session, user_id)}

    # API keys (app.security.api_keys): the request hook signs a keyed call in first.
    def validate_api_key(self, api_key_string: str) -> Any:
        from app.security.api_keys_web import key_use

        return g.user if key_use() is not None else None

    def has_access(self, permission_name: str, view_name: str) -> bool:
        """Through a key: only what the key's scopes reach and its capped roles hold
        (so never an Admin-only endpoint); otherwise FAB's check."""
        from app.security.api_keys_web import key_use

        use = key_use() if has_request_context() else None
        if use is None:
            return bool(super().has_access(permission_name, view_name))
        from app.security import api_keys
        from app.security.request import request_actor

        if not api_keys.permits(permission_name, view_name, use):
            return False
        ids = self._role_ids(request_actor().roles)
        return bool(ids) and (permission_name, view_name) in access.roles_pairs(self.session, ids)

    def _role_ids(self, names: frozenset[str]) -> list[int]:
        """Ids of built-in roles by name, kept per database: they never change once made
        (``app.security.sync``)."""
        url = str(self.session.get_bind().engine.url)
        missing = [n for n in names if (url, n) not in _ROLE_IDS]
        if missing:
            for role in self.session.execute(select(self.role_model).where(
                    self.role_model.name.in_(sorted(missing)))).scalars():
                _ROLE_IDS[(url, role.name)] = role.id
        return [_ROLE_IDS[(url, n)] for n in names if (url, n) in _ROLE_IDS]

    def register_views(self) -> None:
        # FAB registers its own key API when keys are enabled; ours is ApiKeyApi.
        enabled = current_app.config.get("FAB_API_KEY_ENABLED", False)
        current_app.config["FAB_API_KEY_ENABLED"] = False
        try:
            self._register_views()
        finally:
            current_app.config["FAB_API_KEY_ENABLED"] = enabled

    # Fewer statements per request, same answers (app.security.access).
    def is_item_public(self, permission_name: str, view_name: str) -> bool:
        if has_request_context() and not access.epoch_seen():
            revocation.prime(self.session)
        return (permission_name, view_name) in access.public_pairs(
            self.session, self.auth_role_public)

    def exist_permission_on_roles(self, view_name: str, permission_name: str,
                                  role_ids: list[int]) -> bool:
        return (permission_name, view_name) in access.roles_pairs(self.session, role_ids)

    def get_user_by_id(self, pk: Any) -> Any:
        """The user with its roles and its groups' roles, in one statement (every
        request's permission check reads them: three statements one by one)."""
        return self.session.get(self.user_model, pk, options=[
            joinedload(self.user_model.roles),
            joinedload(self.user_model.groups).joinedload(self.group_model.roles)])

    def create_login_manager(self, app: Flask) -> LoginManager:
        """Sessions record the credentials generation they were issued under (at login)
        and are refused once it has moved on (see app.security.revocation)."""
        manager = super().create_login_manager(app)
        manager.user_loader(self.load_session_user)
        if not user_logged_in.has_receivers_for(app):
            user_logged_in.connect(_stamp_session)
        return manager

    def load_session_user(self, pk: Any) -> Any:
        user = self.load_user(pk)
        if user is None or not revocation.session_is_current(user.id, self.session):
            return None
        return user

    def add_permissions_view(self, base_permissions: list[str], view_menu: str) -> None:
        """FAB syncs the permissions of one view at a time, and takes the view's methods
        for everything its permission name (view menu) may hold: whatever else that
        name holds, it tries to delete. Several of our views share a name on purpose
        ("Runs": RunApi, RunView, FailedTaskView; "Workflows", "Secrets", "Teams" the
        same), and a name can be a menu entry too ("Runs" in the "Workflows" menu), so
        each start it tried to take ``can_control`` (FailedTaskView has no control) and
        ``menu_access`` away from those names, and said "Refused to delete permission
        view" because Admin held them. The permissions of a name are the union of its
        views' methods, plus the menu entry's ``menu_access`` (the menu's own sync,
        ``add_permissions_menu``, looks after that one)."""
        wanted = set(base_permissions)
        for view in self.appbuilder.baseviews:
            if getattr(view, "class_permission_name", None) == view_menu:
                wanted.update(view.base_permissions or ())
        if self.find_permission_view_menu("menu_access", view_menu) is not None:
            wanted.add("menu_access")
        super().add_permissions_view(sorted(wanted), view_menu)

    def _register_views(self) -> None:
        super().register_views()
        # FAB limits only the form login (AUTH_RATE_LIMITED); the API login is the
        # one scripts hammer, so it gets the same limit.
        if self.is_auth_limited and current_app.config.get("FAB_ADD_SECURITY_VIEWS", True):
            api = next(
                (v for v in self.appbuilder.baseviews if v.__class__ is self.security_api),
                None,
            )
            if api is not None and api.blueprint is not None:
                self.limiter.limit(self.auth_rate_limit, methods=["POST"])(api.blueprint)

    def _login_event(self, username: str, user: Any, outcome: str,
                     reason: str | None = None) -> None:
        after = {"username": username, **({"reason": reason} if reason else {})}
        self._event("login", username, user, outcome, after)

    def _lockout_event(self, username: str, user: Any, lockout: login_limits.Lockout) -> None:
        log.warning("login lockout: %s %r from %s for %s s after %s failures",
                    lockout.scope, username, client_ip(), lockout.seconds, lockout.failures)
        self._event("login_lockout", username, user, "denied", {
            "username": username, "scope": lockout.scope, "failures": lockout.failures,
            "seconds": lockout.seconds,
        })

    def _event(self, action: str, username: str, user: Any, outcome: str,
               after: dict[str, Any]) -> None:
        actor = Actor(username=username or "(empty)", ip=client_ip(), request_id=request_id())
        tenant = None
        if user is not None:
            from app.security.request import actor_for_user

            tenant = actor_for_user(self.session, user).tenant
        record(
            self.session,
            build_event(
                actor,
                action,
                "user",
                str(user.id) if user is not None else None,
                outcome=outcome,
                tenant=tenant,
                after=after,
            ),
        )
        self.session.commit()
        mark_audited()

    def auth_user_db(self, username: str, password: str) -> Any:
        return self._limited(username, password, super().auth_user_db)

    def auth_user_ldap(self, username: str, password: str) -> Any:
        return self._limited(username, password, super().auth_user_ldap)

    def _limited(self, username: str, password: str, check: Any) -> Any:
        """One login attempt, form or API, under the login limits (app.security.login_limits)."""
        try:
            login_limits.check(username, client_ip())
        except login_limits.LoginLocked:
            known = self.find_user(username=username) if username else None
            self._login_event(username, known, "denied", reason="locked out")
            log.info("login refused: %r from %s (locked out)", username, client_ip())
            raise
        user = check(username, password)
        if user is not None:
            login_limits.succeeded(username)
            self._login_event(user.username, user, "success")
            log.info("login: %s from %s", user.username, client_ip())
        else:
            known = self.find_user(username=username) if username else None
            self._login_event(username, known, "denied")
            why = "wrong password or inactive user" if known is not None else "no such user"
            log.info("login refused: %r from %s (%s)", username, client_ip(), why)
            for lockout in login_limits.failed(username, client_ip()):
                self._lockout_event(username, known, lockout)
        return user

    def on_user_logout(self, user: Any) -> None:
        from app.security.request import actor_for_user

        log.info("logout: %s from %s", user.username, client_ip())
        actor = actor_for_user(self.session, user, ip=client_ip(), request_id=request_id())
        record(self.session, build_event(actor, "logout", "user", str(user.id)))
        # Logging out ends every session and token of the user, everywhere.
        revocation.revoke(self.session, user.id)
        self.session.commit()
        g.apg_audited = True
