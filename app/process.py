"""Process roles (``APG_PROCESS``).

``web``: everything. ``worker``: what RQ workers, the scheduler and `audit verify` need
(models, services, the engine, runtime hooks, live publishing, the audit recorder, the
CLI), none of the views, REST APIs, menus, Swagger, templates, static files, CSRF or the
Socket.IO server; FAB's AppBuilder is not built and permissions are never synced. See
docs/developer_guide.md, "Process roles".
"""

from __future__ import annotations

from typing import Any

WEB = "web"
WORKER = "worker"
PROCESS_ROLES = (WEB, WORKER)


def process_role(value: Any) -> str:
    role = str(value or WEB).strip().lower()
    if role not in PROCESS_ROLES:
        raise ValueError(f"APG_PROCESS must be one of {', '.join(PROCESS_ROLES)}, not {value!r}")
    return role
