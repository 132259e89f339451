"""The actor of the current HTTP request (the only place that reads ``g.user``), and
of any FAB user (``actor_for_user``: roles, teams, tenants)."""

from __future__ import annotations

from typing import Any

from flask import g, has_request_context, request

from app.extensions import DbSession, db
from app.ids import new_id
from app.security import memberships
from app.security.actor import Actor, roles_of


def actor_for_user(
    session: DbSession, user: Any, *, ip: str | None = None, request_id: str | None = None
) -> Actor:
    """The actor of a FAB user: roles (direct and through groups), teams, tenants."""
    rows = memberships.taken(session, user.id)
    return Actor(
        username=user.username,
        user_id=user.id,
        roles=roles_of(user),
        team_ids=frozenset(r[0] for r in rows),
        tenant_ids=frozenset(r[1] for r in rows),
        tenant_names=tuple(sorted({r[2] for r in rows})),
        ip=ip,
        request_id=request_id,
    )


def request_id() -> str:
    rid = getattr(g, "request_id", None)
    if rid is None:
        supplied = request.headers.get("X-Request-ID", "")
        # Accept a caller's id only when it is short and printable: it ends up in logs.
        rid = supplied if 0 < len(supplied) <= 64 and supplied.isprintable() else new_id()
        g.request_id = rid
    return rid


def client_ip() -> str | None:
    return request.remote_addr


def current_user_or_none() -> object | None:
    user = getattr(g, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        # Hooks that refuse a request early (CSRF, oversize) run before FAB sets g.user.
        from flask_login import current_user

        authenticated = getattr(current_user, "is_authenticated", False)
        user = current_user._get_current_object() if authenticated else None  # type: ignore[attr-defined]
    if user is None:
        user = _bearer_user()
    return user


def _bearer_user() -> object | None:
    """The user of a Bearer token, for requests refused before FAB checked it
    (oversize bodies, malformed JSON): the audit event still names who tried."""
    if not request.headers.get("Authorization", "").lower().startswith("bearer "):
        return None
    from flask_jwt_extended import get_current_user, verify_jwt_in_request

    try:
        verify_jwt_in_request(optional=True)
        user = get_current_user()
    except Exception:  # an invalid token is simply no user
        return None
    return user if getattr(user, "is_authenticated", False) else None


def request_actor() -> Actor:
    """Actor of this request; anonymous callers get an actor with no roles."""
    if not has_request_context():
        raise RuntimeError("request_actor() needs a request context")
    user = current_user_or_none()
    key = getattr(user, "id", None)
    cached = getattr(g, "_apg_actor", None)
    if cached is not None and cached.user_id == key:
        return cached
    use = g.get("apg_key_use")
    if user is None:
        actor = Actor(username="anonymous", ip=client_ip(), request_id=request_id())
    elif use is not None and use.user_id == getattr(user, "id", None):
        from app.security.api_keys import narrow, person_of

        actor = narrow(db.session, person_of(user, client_ip(), request_id()), use)
    else:
        actor = actor_for_user(db.session, user, ip=client_ip(), request_id=request_id())
    g._apg_actor = actor
    return actor
