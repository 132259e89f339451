"""Who is acting: the argument every service function takes.

Views and API handlers build an ``Actor`` from the logged-in user
(``app.security.request.actor_for_user``: roles, teams, tenants); workers and the CLI
build one for the user (or the system) they act for. Services never read ``g`` or
``current_user`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.security.roles import ADMIN


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
    # Acting through an API key (app.security.api_keys): what it records in the audit
    # trail (``api_key:<prefix>``, ``mcp:<tool>``) and the key's scopes. ``scopes`` None:
    # not narrowed by a key (a person, a worker, the CLI).
    via: str | None = None
    scopes: frozenset[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def is_system(self) -> bool:
        return self.user_id is None

    @property
    def tenant(self) -> str | None:
        """The tenant an event without its own tenant is filed under."""
        return self.tenant_names[0] if self.tenant_names else None

    def may(self, scope: str) -> bool:
        """Whether the key this actor acts through (if any) has ``scope``."""
        return self.scopes is None or scope in self.scopes

    def has_role(self, *names: str) -> bool:
        return self.is_admin or any(name in self.roles for name in names)


def roles_of(user: Any) -> frozenset[str]:
    """A FAB user's role names, direct and through their groups."""
    roles = {role.name for role in user.roles}
    for group in getattr(user, "groups", []) or []:
        roles.update(role.name for role in group.roles)
    return frozenset(roles)


SYSTEM = Actor(username="system", roles=frozenset({ADMIN}))
