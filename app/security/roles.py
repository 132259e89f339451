"""The five roles of API.md: their names (the only place they are spelled) and the
rules that say which FAB permissions each one holds.

Rules are (view-menu regex, permission regex) pairs matched in full against every
permission FAB knows after all views are registered; ``app.security.sync`` runs at
every start and makes each role hold exactly what its rules match (Admin: everything),
so a permission granted by hand to a built-in role is taken back at the next start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

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
    # Their own API keys (app.security.api_keys); a key never reaches these.
    (r"ApiKeys", r"can_read|can_write"),
]


def merge_rules(*sources: Mapping[str, Iterable[Rule]]) -> dict[str, list[Rule]]:
    merged: dict[str, list[Rule]] = {name: [] for name in ROLE_NAMES}
    for source in sources:
        for role, rules in source.items():
            merged.setdefault(role, []).extend(rules)
    return merged


def matches(rules: list[Rule], view: str, permission: str) -> bool:
    return any(re.fullmatch(v, view) and re.fullmatch(p, permission) for v, p in rules)
