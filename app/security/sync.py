"""Permissions and roles, synced from what the registered capabilities declare.

Run by the web role at every start (``create_app``) and by ``flask --app app up``
before it starts anything: FAB creates the permissions of every registered view, then
each of the five roles gets exactly what its rules match (``app.security.roles``).
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask
from sqlalchemy import select

from app.audit.recorder import build_event, record, row_events_off
from app.extensions import DbSession, db
from app.process import WEB
from app.security.actor import SYSTEM
from app.security.roles import ADMIN, ROLE_NAMES, Rule, matches, merge_rules


def sync_security(app: Flask, baseline: dict[str, set[str]] | None = None) -> None:
    """Create FAB permissions for every registered view and re-sync the five roles.

    ``baseline`` is what the roles held before this start touched them (FAB grants
    Admin each new permission as views register), so the audit trail gets one event
    per changed role instead of one per permission.
    """
    from app.composition.engine import get_composition
    from app.tenancy.service import ensure_default_tenant

    if app.config.get("APG_PROCESS", WEB) != WEB:
        # A worker-role app registered no views, so it knows none of their permissions:
        # syncing from it would strip the roles of everything the web process serves.
        raise RuntimeError("permissions and roles are synced by a web-role app only")
    if baseline is None:
        baseline = role_permissions(db.session)
    appbuilder = app.extensions["appbuilder"]
    # Roles first: FAB grants every new permission to the Admin role as it creates it.
    with row_events_off():
        for name in (*ROLE_NAMES, app.config["AUTH_ROLE_PUBLIC"]):
            if appbuilder.sm.find_role(name) is None:
                appbuilder.sm.add_role(name)
        appbuilder.add_permissions(update_perms=True)
    sync_roles(db.session, merge_rules(get_composition(app).role_rules()), baseline)
    ensure_default_tenant(db.session, app.config["DEFAULT_TENANT"])


def _label(pv: object) -> str:
    return f"{pv.permission.name} on {pv.view_menu.name}"  # type: ignore[attr-defined]


def role_permissions(session: DbSession) -> dict[str, set[str]]:
    """What each role holds now, to compare with after FAB and the sync changed it."""
    from flask_appbuilder.security.sqla.models import Role

    return {
        role.name: {_label(pv) for pv in role.permissions}
        for role in session.execute(select(Role)).scalars()
    }


def sync_roles(
    session: DbSession,
    rules: Mapping[str, list[Rule]],
    baseline: Mapping[str, set[str]] | None = None,
) -> dict[str, int]:
    """Create missing roles and set each role's permissions to what its rules match.

    One audit event per role that changed since ``baseline`` (default: now), listing
    what was granted and revoked.
    """
    from flask_appbuilder.security.sqla.models import PermissionView, Role

    all_pvs = list(session.execute(select(PermissionView)).scalars())
    counts = {}
    for name in ROLE_NAMES:
        role = session.execute(select(Role).where(Role.name == name)).scalar()
        if role is None:
            role = Role(name=name)
            session.add(role)
        if name == ADMIN:
            wanted = all_pvs
        else:
            wanted = [
                pv for pv in all_pvs
                if pv.view_menu and pv.permission
                and matches(rules.get(name, []), pv.view_menu.name, pv.permission.name)
            ]
        current = {_label(pv) for pv in role.permissions}
        had = set(baseline.get(name, set())) if baseline is not None else current
        now = {_label(pv) for pv in wanted}
        if current != now:
            with row_events_off():
                role.permissions = wanted
                session.flush()
        if had != now:
            record(session, build_event(
                SYSTEM, "sync", "role", name,
                before={"revoked": sorted(had - now)}, after={"granted": sorted(now - had)},
            ))
        counts[name] = len(wanted)
    session.commit()
    return counts
