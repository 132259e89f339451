"""The platform's own screens and APIs, registered through the composition engine
like any other capability (so the engine is exercised on every start)."""

from __future__ import annotations

from app.composition import Capability, Registrar
from app.security.roles import AUDITOR, AUTHOR, OPERATOR, PERSONAL, VIEWER


def register(reg: Registrar) -> None:
    from app.audit import checkpoints

    reg.on_ready(checkpoints.install)  # the scheduler's periodic audit checkpoint
    if not reg.web:
        return  # screens and APIs only: a worker-role process has nothing to register
    from app.audit.api import AuditApi
    from app.audit.views import AuditTrailView
    from app.composition.api import CapabilityApi, CapabilityView
    from app.security.api_keys_web import ApiKeyApi, ApiKeyView
    from app.tenancy.api import TeamApi, TenantApi
    from app.tenancy.views import TeamMembershipView, TeamView, TenantView

    reg.add_view(
        TenantView, "Manage tenants", label="Tenants", icon="fa-building", category="Security"
    )
    reg.add_view(TeamView, "Manage teams", label="Teams", icon="fa-users", category="Security")
    reg.add_view_no_menu(TeamMembershipView)
    reg.add_view(
        AuditTrailView, "Audit trail", icon="fa-list-ol", category="Audit",
        category_icon="fa-shield",
    )
    reg.add_view(
        CapabilityView, "Installed capabilities", label="Capabilities", icon="fa-puzzle-piece",
        category="Security",
    )
    reg.add_api(TenantApi)
    reg.add_api(TeamApi)
    reg.add_api(AuditApi)
    reg.add_api(CapabilityApi)
    reg.add_api(ApiKeyApi)
    reg.add_view_no_menu(ApiKeyView)  # in the user menu (templates/appbuilder/navbar_right.html)


_member_read = [*PERSONAL, ("Teams", "can_read")]

capability = Capability.build(
    register,
    id="platform",
    name="APG platform",
    version="0.1.0",
    description="Tenants, teams, roles, the audit trail and the composition engine.",
    role_permissions={
        AUTHOR: tuple(_member_read),
        OPERATOR: tuple(_member_read),
        VIEWER: tuple(_member_read),
        AUDITOR: (
            *PERSONAL,
            ("AuditTrail", "can_read|can_export"),
            ("Audit|Audit trail", "menu_access"),
        ),
    },
    menus=("Security", "Audit"),
)
