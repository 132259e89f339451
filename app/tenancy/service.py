"""Tenants, teams and memberships. Every function takes the acting user."""

from __future__ import annotations

from typing import Annotated, Any

from flask_appbuilder.security.sqla.models import User
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.audit.context import acting_as
from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.extensions import DbSession
from app.models import Team, TeamMembership, Tenant
from app.security.actor import Actor
from app.security.scope import get_scoped, scoped

Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]*$",
    ),
]


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name


class TeamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    tenant: Name | None = None


class TeamUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=256)


def _require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise Forbidden("Only an Admin may change tenants and teams")


def ensure_default_tenant(session: DbSession, name: str) -> Tenant:
    tenant = session.execute(select(Tenant).where(Tenant.name == name)).scalar()
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.commit()
    return tenant


def list_tenants(session: DbSession, actor: Actor) -> list[Tenant]:
    stmt = scoped(select(Tenant).order_by(Tenant.name), Tenant, actor)
    return list(session.execute(stmt).scalars())


def create_tenant(session: DbSession, actor: Actor, data: TenantIn) -> Tenant:
    _require_admin(actor)
    if session.execute(select(Tenant.id).where(Tenant.name == data.name)).first():
        raise Conflict(
            f"A tenant named {data.name!r} already exists",
            [{"path": "name", "message": "already exists"}],
        )
    with acting_as(actor):
        tenant = Tenant(name=data.name)
        session.add(tenant)
        _commit(session, "name", data.name)
    return tenant


def _named(session: DbSession, column: Any, name: str, path: str, what: str) -> Any:
    """The row whose ``column`` is ``name``, or a 422 naming the request field."""
    row = session.execute(select(column.class_).where(column == name)).scalar()
    if row is None:
        raise ValidationFailed(
            f"No {what} named {name!r}", [{"path": path, "message": f"unknown {what}"}]
        )
    return row


def _tenant_by_name(session: DbSession, name: str) -> Tenant:
    return _named(session, Tenant.name, name, "tenant", "tenant")  # type: ignore[no-any-return]


def _name_taken(
    session: DbSession, tenant_id: str, name: str, except_id: str | None = None
) -> bool:
    stmt = select(Team.id).where(Team.tenant_id == tenant_id, func.lower(Team.name) == name.lower())
    if except_id:
        stmt = stmt.where(Team.id != except_id)
    return session.execute(stmt).first() is not None


def _commit(session: DbSession, path: str, name: str) -> None:
    try:
        session.commit()
    except IntegrityError as exc:  # a concurrent insert won the unique constraint
        session.rollback()
        raise Conflict(
            f"{name!r} already exists", [{"path": path, "message": "already exists"}]
        ) from exc


def create_team(session: DbSession, actor: Actor, data: TeamIn, default_tenant: str) -> Team:
    _require_admin(actor)
    tenant = _tenant_by_name(session, data.tenant or default_tenant)
    if _name_taken(session, tenant.id, data.name):
        raise Conflict(
            f"Tenant {tenant.name!r} already has a team named {data.name!r}",
            [{"path": "name", "message": "already exists in this tenant"}],
        )
    with acting_as(actor):
        team = Team(name=data.name, tenant=tenant)
        session.add(team)
        _commit(session, "name", data.name)
    return team


def list_teams(session: DbSession, actor: Actor) -> list[Team]:
    return list(session.execute(scoped(select(Team).order_by(Team.name), Team, actor)).scalars())


def get_team(session: DbSession, actor: Actor, team_id: str) -> Team:
    return get_scoped(session, Team, team_id, actor)


def update_team(session: DbSession, actor: Actor, team_id: str, data: TeamUpdate) -> Team:
    team = get_team(session, actor, team_id)
    _require_admin(actor)
    if _name_taken(session, team.tenant_id, data.name, except_id=team.id):
        raise Conflict(
            f"Tenant {team.tenant.name!r} already has a team named {data.name!r}",
            [{"path": "name", "message": "already exists in this tenant"}],
        )
    with acting_as(actor):
        team.name = data.name
        _commit(session, "name", data.name)
    return team


def dependents(session: DbSession, table: str, row_id: str) -> dict[str, int]:
    """Rows of other tables that would block deleting ``table``'s row ``row_id``:
    every foreign key to it that does not cascade (workflows, runs... as capabilities
    add them), so the answer stays right without this module knowing those tables."""
    return {name: count for name, (count, _) in _blocking(session, table, row_id).items()}


def _blocking(session: DbSession, table: str, row_id: str) -> dict[str, tuple[int, int]]:
    """``{table: (rows, of which soft-deleted)}`` of the rows that block the delete."""
    from sqlalchemy import Table

    from app.extensions import db

    found: dict[str, tuple[int, int]] = {}
    for other in db.metadata.tables.values():
        for fk in other.foreign_keys:
            if fk.column.table.name != table or (fk.ondelete or "").upper() == "CASCADE":
                continue
            assert isinstance(other, Table)
            # A soft-deleted row (a deleted workflow, kept for its runs) still blocks.
            deleted = other.c.get("deleted_at")
            counts = [func.count()]
            if deleted is not None:
                counts.append(func.count(deleted))
            row = session.execute(
                select(*counts).select_from(other).where(fk.parent == row_id)
            ).one()
            total, gone = int(row[0]), int(row[1]) if deleted is not None else 0
            if total:
                before = found.get(other.name, (0, 0))
                found[other.name] = (before[0] + total, before[1] + gone)
    return found


def _noun(table_name: str) -> tuple[str, str]:
    """(singular, plural) of what a table's rows are, from its model's class name:
    ``Workflow`` -> workflow/workflows, ``TaskRun`` -> task run/task runs."""
    import re

    from flask_appbuilder.models.sqla import Model

    word = table_name.removeprefix("apg_").replace("_", " ")
    for mapper in Model.registry.mappers:
        if getattr(mapper, "local_table", None) is not None and (
            mapper.local_table.name == table_name
        ):
            word = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", mapper.class_.__name__).lower()
            break
    plural = word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")
    return word, plural


def _enumerate(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def blocking_message(session: DbSession, kind: str, name: str, table: str,
                     row_id: str) -> str | None:
    """What still blocks deleting a row, in words ("Team 'ops' still owns 3 workflows
    and 12 runs: delete or move them first"); None when nothing does."""
    blocking = _blocking(session, table, row_id)
    if not blocking:
        return None
    from app.extensions import db

    # Parents first (workflows before their runs), as the tables depend on each other.
    order = {table.name: i for i, table in enumerate(db.metadata.sorted_tables)}
    parts = []
    for other, (count, gone) in sorted(blocking.items(), key=lambda kv: order.get(kv[0], 0)):
        singular, plural = _noun(other)
        part = f"{count} {singular if count == 1 else plural}"
        if gone:  # soft-deleted rows are out of sight in the lists, so say why they count
            part += " (deleted)" if gone == count else f" ({gone} of them deleted)"
        parts.append(part)
    total = sum(count for count, _ in blocking.values())
    return (f"{kind} {name!r} still owns {_enumerate(parts)}: "
            f"delete or move {'it' if total == 1 else 'them'} first")


def refuse_if_referenced(session: DbSession, kind: str, name: str, table: str, row_id: str) -> None:
    message = blocking_message(session, kind, name, table, row_id)
    if message:
        raise Conflict(message)


def delete_team(session: DbSession, actor: Actor, team_id: str) -> None:
    team = get_team(session, actor, team_id)
    _require_admin(actor)
    refuse_if_referenced(session, "Team", team.name, Team.__tablename__, team.id)
    with acting_as(actor):
        session.delete(team)
        try:
            session.commit()
        except IntegrityError as exc:  # a row was added to the team since the check
            session.rollback()
            message = blocking_message(session, "Team", team.name, Team.__tablename__, team.id)
            raise Conflict(
                message or f"Team {team.name!r} could not be deleted: try again"
            ) from exc


def _user(session: DbSession, username: str) -> User:
    return _named(session, User.username, username, "username", "user")  # type: ignore[no-any-return]


def add_member(session: DbSession, actor: Actor, team_id: str, data: MemberIn) -> TeamMembership:
    team = get_team(session, actor, team_id)
    _require_admin(actor)
    user = _user(session, data.username)
    exists = session.execute(
        select(TeamMembership.id).where(
            TeamMembership.team_id == team.id, TeamMembership.user_id == user.id
        )
    ).first()
    if exists:
        raise Conflict(
            f"{user.username!r} is already a member of {team.name!r}",
            [{"path": "username", "message": "already a member"}],
        )
    with acting_as(actor):
        membership = TeamMembership(team=team, user=user)
        session.add(membership)
        _commit(session, "username", user.username)
    return membership


def remove_member(session: DbSession, actor: Actor, team_id: str, username: str) -> None:
    team = get_team(session, actor, team_id)
    _require_admin(actor)
    membership = session.execute(
        select(TeamMembership)
        .join(User, User.id == TeamMembership.user_id)
        .where(TeamMembership.team_id == team.id, User.username == username)
    ).scalar()
    if membership is None:
        raise NotFound(f"{username!r} is not a member of this team")
    with acting_as(actor):
        session.delete(membership)
        session.commit()


def members(session: DbSession, team: Team) -> list[str]:
    rows = session.execute(
        select(User.username)
        .join(TeamMembership, TeamMembership.user_id == User.id)
        .where(TeamMembership.team_id == team.id)
        .order_by(User.username)
    )
    return [row[0] for row in rows]
