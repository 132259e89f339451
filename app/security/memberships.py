"""A user's teams (with their tenants), read with the request's credentials.

Every signed-in request needs them for its actor (``app.security.request``,
``app.security.api_keys.narrow``). Rather than a statement of their own, they come as one
JSON column of the statement that reads the credentials anyway (the generation of a
token or a session, ``app.security.revocation``; an API key, ``api_keys.authenticate``),
and are kept for this request's actor only.
"""

from __future__ import annotations

import json
from typing import Any

from flask import g, has_request_context
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session, scoped_session

from app.extensions import DbSession
from app.models import Team, TeamMembership, Tenant

_READ = "_apg_memberships"


def _rows(user_id: Any, *columns: Any) -> Select[Any]:
    """``columns`` over the user's memberships joined to their teams and tenants."""
    return (select(*columns)
            .join(TeamMembership, TeamMembership.team_id == Team.id)
            .join(Tenant, Tenant.id == Team.tenant_id)
            .where(TeamMembership.user_id == user_id))


def column(conn: Any, user_id: Any) -> ColumnElement[Any]:
    """The user's ``(team, tenant, tenant name)`` rows as one JSON value, for a statement
    run on ``conn`` (a session or a connection: its dialect says how to aggregate);
    ``user_id``: a value, or a column of that statement."""
    bind = conn.get_bind() if isinstance(conn, Session | scoped_session) else conn
    if bind.dialect.name == "postgresql":
        row, rows = func.json_build_array, func.json_agg
    else:
        row, rows = func.json_array, func.json_group_array
    return _rows(user_id, rows(row(Team.id, Tenant.id, Tenant.name))).scalar_subquery()


def keep(user_id: int, value: Any) -> None:
    """Keep, for this request's actor only, the rows ``column`` read."""
    if has_request_context():
        rows = json.loads(value) if isinstance(value, str) else value
        g.setdefault(_READ, {})[user_id] = [tuple(r) for r in rows or ()]


def taken(session: DbSession, user_id: int) -> list[Any]:
    """The user's rows: those kept, taken once (a later actor of the same user in this
    request reads them afresh), else read now."""
    kept = g.get(_READ) if has_request_context() else None
    if kept is not None and user_id in kept:
        return list(kept.pop(user_id))
    return list(session.execute(_rows(user_id, Team.id, Tenant.id, Tenant.name)).all())
