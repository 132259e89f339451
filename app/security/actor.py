"""Who is acting: the argument every service function takes.

Views and API handlers build an ``Actor`` from the logged-in user; workers and the
CLI build one for the user (or the system) they act for. Services never read
``g`` or ``current_user`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from app.extensions import DbSession

ADMIN_ROLE = "Admin"


@dataclass(frozen=True)
class Actor:
    username: str
    user_id: int | None = None
    roles: frozenset[str] = frozenset()
    team_ids: frozenset[str] = frozenset()
    tenant_ids: frozenset[str] = frozenset()
    tenant_names: tuple[str, ...] = ()
    ip: str | None = None
    request_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    @property
    def is_system(self) -> bool:
        return self.user_id is None

    @property
    def tenant(self) -> str | None:
        """The tenant an event without its own tenant is filed under."""
        return self.tenant_names[0] if self.tenant_names else None

    def has_role(self, *names: str) -> bool:
        return self.is_admin or any(name in self.roles for name in names)


SYSTEM = Actor(username="system", roles=frozenset({ADMIN_ROLE}))


def actor_for_user(
    session: DbSession, user: Any, *, ip: str | None = None, request_id: str | None = None
) -> Actor:
    """Build the actor of a FAB user: roles (direct and through groups), teams, tenants."""
    from app.models import Team, TeamMembership, Tenant

    roles = {role.name for role in user.roles}
    for group in getattr(user, "groups", []) or []:
        roles.update(role.name for role in group.roles)
    rows = session.execute(
        select(Team.id, Tenant.id, Tenant.name)
        .join(TeamMembership, TeamMembership.team_id == Team.id)
        .join(Tenant, Tenant.id == Team.tenant_id)
        .where(TeamMembership.user_id == user.id)
    ).all()
    return Actor(
        username=user.username,
        user_id=user.id,
        roles=frozenset(roles),
        team_ids=frozenset(r[0] for r in rows),
        tenant_ids=frozenset(r[1] for r in rows),
        tenant_names=tuple(sorted({r[2] for r in rows})),
        ip=ip,
        request_id=request_id,
    )
