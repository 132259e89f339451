"""Revocation: one credentials generation per user, checked on every request.

Every credential a user holds (a UI session, a JWT access or refresh token, later API
keys and MCP sessions) records the generation it was issued under: the ``cg`` claim of
a JWT, ``_apg_cg`` in a session. A credential is valid only while its generation is the
user's current one, so raising the generation revokes them all at once, on every
process, with nothing to broadcast: the check is one primary-key lookup in the shared
database (``apg_user_credentials``; no row means generation 0, so credentials issued
before this existed stay valid until the first revocation).

The generation rises when the user logs out, and in the same transaction as any change
of the user's password, roles, groups or active flag, whichever path made it (FAB's
forms, FAB's user API, the CLI): the ``after_flush`` hook below sees them all. The
session that changed its own user's password keeps working (it is re-stamped after the
commit); every other one is logged out.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import jwt
from flask import g, has_request_context, request
from flask import session as http_session
from flask_appbuilder.security.sqla.models import User
from sqlalchemy import event, inspect, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, scoped_session

from app.models import UserCredentials
from app.security import access, memberships

JWT_CLAIM = "cg"
SESSION_KEY = "_apg_cg"
# What revokes a user's credentials when it changes.
SENSITIVE = ("password", "active", "roles", "groups")
_PENDING = "apg_revoked_users"
_table = UserCredentials.__table__


def _as_user_id(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def generation(conn: Any, user_id: int) -> int:
    """The user's current generation (0 when never revoked)."""
    cache: dict[int, int] | None = getattr(g, "_apg_cg", None) if has_request_context() else None
    if cache is not None and user_id in cache:
        return cache[user_id]
    # The permission epoch comes with it (app.security.access), and in a request the
    # user's teams (app.security.memberships): one statement for the three.
    columns: list[Any] = [
        select(_table.c.generation).where(_table.c.user_id == user_id).scalar_subquery(),
        access.EPOCH]
    if has_request_context():
        columns.append(memberships.column(conn, user_id))
    found, epoch, *teams = conn.execute(select(*columns)).one()
    access.observed(epoch)
    value = int(found or 0)
    if has_request_context():
        memberships.keep(user_id, teams[0])
        if cache is None:
            cache = g._apg_cg = {}
        cache[user_id] = value
    return value


def claimed_user_id() -> int | None:
    """Whom this request says it is, before anything is verified: the ``sub`` of its
    Bearer token (signature not checked) or its session's user. Only to read that
    user's generation early (``prime``); never an identity."""
    if not has_request_context():
        return None
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        token = header[7:].strip()
        if token.count(".") != 2:  # an API key: its own statement read the epoch
            return None
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        return _as_user_id(claims.get("sub"))
    return _as_user_id(http_session.get("_user_id"))


def prime(conn: Any) -> None:
    """Read the claimed user's generation, and with it the permission epoch, before FAB
    asks about the Public role (which would read the epoch alone, then the generation
    again: one statement more on every signed-in request). A forged claim only reads a
    value that is never shown, and the credential is checked against it as usual."""
    uid = claimed_user_id()
    if uid is not None:
        generation(conn, uid)


def _bump(conn: Connection, user_id: int) -> int:
    now = dt.datetime.now(dt.UTC)
    raised = conn.execute(
        update(_table).where(_table.c.user_id == user_id)
        .values(generation=_table.c.generation + 1, changed_at=now)
    )
    if raised.rowcount == 0:
        # The first revocation of this user. Two processes racing here is harmless for
        # the outcome (either way the generation moved past every issued credential),
        # but the loser's INSERT would fail its transaction, hence ON CONFLICT.
        insert = _dialect_insert(conn)
        stmt = insert(_table).values(user_id=user_id, generation=1, changed_at=now)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=[_table.c.user_id],
            set_={"generation": _table.c.generation + 1, "changed_at": now},
        ))
    if has_request_context():
        g.pop("_apg_cg", None)
    return int(conn.execute(
        select(_table.c.generation).where(_table.c.user_id == user_id)
    ).scalar_one())


def _dialect_insert(conn: Connection) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def revoke(session: Session, user_id: int) -> None:
    """Revoke every credential of the user (takes effect when the session commits)."""
    session.info.setdefault(_PENDING, {})[user_id] = _bump(session.connection(), user_id)


def is_current(user_id: Any, issued: Any, conn: Any) -> bool:
    """Whether a credential issued under generation ``issued`` is still valid."""
    uid = _as_user_id(user_id)
    if uid is None:
        return False
    return int(issued or 0) == generation(conn, uid)


def stamp_session(user_id: int, conn: Any) -> None:
    """Record in the HTTP session the generation it is issued under (at login)."""
    http_session[SESSION_KEY] = generation(conn, user_id)


def session_is_current(user_id: Any, conn: Any) -> bool:
    return is_current(user_id, http_session.get(SESSION_KEY, 0), conn)


def _changed(user: User) -> bool:
    state = inspect(user)
    return any(state.attrs[name].history.has_changes() for name in SENSITIVE
               if name in state.attrs)


def _after_flush(session: Session, _context: Any) -> None:
    for obj in session.dirty:
        if isinstance(obj, User) and obj.id is not None and _changed(obj):
            revoke(session, obj.id)


def _after_commit(session: Session) -> None:
    users = session.info.pop(_PENDING, None)
    if not users or not has_request_context():
        return
    # The session that changed its own user goes on under the new generation.
    own = _as_user_id(http_session.get("_user_id"))
    if own in users:
        http_session[SESSION_KEY] = users[own]


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


def install(session: scoped_session[Any]) -> None:
    """Attach the hooks to the application's session (idempotent)."""
    for name, fn in (
        ("after_flush", _after_flush),
        ("after_commit", _after_commit),
        ("after_rollback", _after_rollback),
    ):
        if not event.contains(session, name, fn):
            event.listen(session, name, fn)
