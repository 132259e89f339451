"""Who may do what to a trigger (TRIGGERS.md): the one rule the services enforce and the
pages read (which buttons to show). A trigger belongs to its workflow's team; Admin
may do everything."""

from __future__ import annotations

from app.errors import Forbidden
from app.security.actor import Actor
from app.security.roles import AUTHOR, OPERATOR

EDIT = (AUTHOR,)  # create, change, delete, rotate a token
CONTROL = (OPERATOR, AUTHOR)  # pause, resume, backfill, post a named event


def may(actor: Actor, team_id: str, roles: tuple[str, ...]) -> bool:
    return actor.is_admin or (bool(set(roles) & actor.roles) and team_id in actor.team_ids)


def require(actor: Actor, team_id: str, roles: tuple[str, ...], what: str) -> None:
    if not may(actor, team_id, roles):
        raise Forbidden(f"Only an {' or '.join(roles)} of the workflow's team may {what}")
