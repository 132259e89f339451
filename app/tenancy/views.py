"""Admin screens under "Security": tenants, teams and their members."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_appbuilder import ModelView
from flask_appbuilder.models.sqla.interface import SQLAInterface
from sqlalchemy import func, select

from app.api_support import AuditedFormsMixin, BackToOriginMixin, audit_rejection
from app.errors import parse
from app.extensions import db
from app.models import Team, TeamMembership, Tenant
from app.security.scope import ScopedMixin
from app.tenancy import service

READ_WRITE_VIEW = {
    "list": "read", "show": "read", "download": "read", "api_read": "read",
    "add": "write", "edit": "write", "delete": "write", "action": "write",
    "action_post": "write", "api_create": "write", "api_update": "write",
    "api_delete": "write", "api": "read", "api_get": "read", "api_column_add": "write",
    "api_column_edit": "write", "api_readvalues": "read",
}


def _check_team_name(item: Team, exclude_id: str | None = None) -> None:
    data = parse(service.TeamUpdate, {"name": item.name or ""})
    item.name = data.name
    tenant_id = item.tenant.id if item.tenant else item.tenant_id
    stmt = select(Team.id).where(
        Team.tenant_id == tenant_id, func.lower(Team.name) == data.name.lower()
    )
    if exclude_id:
        stmt = stmt.where(Team.id != exclude_id)
    if db.session.execute(stmt, execution_options={"autoflush": False}).first():
        raise ValueError(f"This tenant already has a team named {data.name!r}")


class TeamMembershipView(BackToOriginMixin, AuditedFormsMixin, ScopedMixin, ModelView):
    audit_target_type = "team_membership"
    datamodel = SQLAInterface(TeamMembership)
    class_permission_name = "Teams"
    method_permission_name = READ_WRITE_VIEW
    list_columns = ["team", "user", "created_at"]
    add_columns = ["team", "user"]
    edit_columns = ["team", "user"]
    show_columns = ["team", "user", "created_at"]

    def _init_forms(self) -> None:
        super()._init_forms()  # type: ignore[no-untyped-call]
        # FAB offers no empty choice for a required relation, so the browser selects
        # the first user (and team) and a careless Save adds them. Start empty: the
        # field stays required, so an empty choice is refused ("This field is required.").
        # (From a team's page the team comes filled in from the link, as before.)
        for name, prompt in (("team", "Choose a team"), ("user", "Choose a user")):
            field = getattr(self.add_form, name)
            field.kwargs.update(allow_blank=True, blank_text=prompt)


class TeamView(BackToOriginMixin, AuditedFormsMixin, ScopedMixin, ModelView):
    audit_target_type = "team"
    datamodel = SQLAInterface(Team)
    class_permission_name = "Teams"
    method_permission_name = READ_WRITE_VIEW
    list_title = "Teams"
    list_columns = ["name", "tenant", "created_at"]
    search_columns = ["name", "tenant"]
    add_columns = ["name", "tenant"]
    edit_columns = ["name"]
    show_columns = ["name", "tenant", "created_at"]
    related_views = [TeamMembershipView]

    def pre_add(self, item: Team) -> None:
        if item.tenant is None:
            item.tenant = service.ensure_default_tenant(
                db.session, current_app.config["DEFAULT_TENANT"]
            )
        with audit_rejection("create", "team", None):
            _check_team_name(item)

    def pre_update(self, item: Team) -> None:
        with audit_rejection("update", "team", item.id):
            _check_team_name(item, exclude_id=item.id)

    def pre_delete(self, item: Team) -> None:
        with audit_rejection("delete", "team", item.id):
            service.refuse_if_referenced(db.session, "Team", item.name, Team.__tablename__, item.id)


class TenantView(BackToOriginMixin, AuditedFormsMixin, ScopedMixin, ModelView):
    audit_target_type = "tenant"
    datamodel = SQLAInterface(Tenant)
    class_permission_name = "Tenants"
    method_permission_name = READ_WRITE_VIEW
    list_columns = ["name", "created_at"]
    add_columns = ["name"]
    edit_columns = ["name"]
    show_columns = ["name", "created_at"]
    search_columns = ["name"]
    related_views = [TeamView]

    def _check(self, item: Any) -> None:
        data = parse(service.TenantIn, {"name": item.name or ""})
        item.name = data.name
        stmt = select(Tenant.id).where(Tenant.name == data.name)
        if item.id:
            stmt = stmt.where(Tenant.id != item.id)
        if db.session.execute(stmt, execution_options={"autoflush": False}).first():
            raise ValueError(f"A tenant named {data.name!r} already exists")

    def pre_add(self, item: Any) -> None:
        with audit_rejection("create", "tenant", None):
            self._check(item)

    def pre_update(self, item: Any) -> None:
        with audit_rejection("update", "tenant", item.id):
            self._check(item)

    def pre_delete(self, item: Any) -> None:
        with audit_rejection("delete", "tenant", item.id):
            service.refuse_if_referenced(
                db.session, "Tenant", item.name, Tenant.__tablename__, item.id
            )
