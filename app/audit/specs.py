"""Audit descriptions of the platform's own models and of FAB's users and roles."""

from __future__ import annotations

from typing import Any

from flask_appbuilder.security.sqla.models import Role, User

from app.audit.registry import AuditSpec, audited
from app.models import Team, TeamMembership, Tenant


def _team_name(obj: Any) -> str | None:
    team = getattr(obj, "team", None)
    return team.name if team is not None else None


def _tenant_of_team(team: Any) -> str | None:
    return team.tenant.name if team is not None and team.tenant is not None else None


def register_platform_specs() -> None:
    audited(
        User,
        AuditSpec(
            target_type="user",
            exclude=frozenset({
                "login_count", "fail_login_count", "last_login", "created_on", "changed_on",
                "created_by_fk", "changed_by_fk",
            }),
            redact=frozenset({"password"}),
            relations=("roles", "groups"),
        ),
    )
    audited(Role, AuditSpec(target_type="role", relations=("permissions",)))
    audited(Tenant, AuditSpec(target_type="tenant", tenant_of=lambda t: t.name))
    audited(
        Team,
        AuditSpec(
            target_type="team", team_of=lambda t: t.name, tenant_of=_tenant_of_team
        ),
    )
    audited(
        TeamMembership,
        AuditSpec(
            target_type="team_membership",
            relations=("user",),
            team_of=_team_name,
            tenant_of=lambda m: _tenant_of_team(getattr(m, "team", None)),
        ),
    )
