"""The five roles of API.md and the FAB permissions each one holds.

Rules are (view-menu regex, permission regex) pairs matched in full against every
permission FAB knows after all views are registered; ``sync_roles`` runs at every
start and makes each role hold exactly what its rules match (Admin: everything), so a
permission granted by hand to a built-in role is taken back at the next start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from sqlalchemy import select

from app.extensions import DbSession

ADMIN = "Admin"
AUTHOR = "Author"
OPERATOR = "Operator"
VIEWER = "Viewer"
AUDITOR = "Auditor"
ROLE_NAMES = (ADMIN, AUTHOR, OPERATOR, VIEWER, AUDITOR)

Rule = tuple[str, str]

# Every signed-in user may read and change their own profile and password.
PERSONAL: list[Rule] = [
    (r"UserDBModelView", r"can_userinfo|resetmypassword|userinfoedit"),
    (r"UserInfoEditView|ResetMyPasswordView", r"can_this_form_(get|post)"),
]

def merge_rules(*sources: Mapping[str, Iterable[Rule]]) -> dict[str, list[Rule]]:
    merged: dict[str, list[Rule]] = {name: [] for name in ROLE_NAMES}
    for source in sources:
        for role, rules in source.items():
            merged.setdefault(role, []).extend(rules)
    return merged


def _matches(rules: list[Rule], view: str, permission: str) -> bool:
    return any(re.fullmatch(v, view) and re.fullmatch(p, permission) for v, p in rules)


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

    from app.audit.recorder import build_event, record, row_events_off
    from app.security.actor import SYSTEM

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
                and _matches(rules.get(name, []), pv.view_menu.name, pv.permission.name)
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
