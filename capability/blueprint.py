"""Registration of the workflow orchestration capability with the composition engine."""

from __future__ import annotations

from typing import Any

from app.composition import Capability, Registrar


def register(reg: Registrar) -> None:
    from capability.api import TransportApi
    from capability.views import TransportView

    reg.add_view(
        TransportView, "Workers & queues", icon="fa-server", category="Security",
    )
    reg.add_api(TransportApi)


def health() -> dict[str, Any]:
    from flask import current_app

    from app.runtime.redis_conn import get_redis
    from capability import service

    return service.health(get_redis(current_app), current_app.config["RQ_QUEUES"])


capability = Capability.build(
    register,
    health,
    id="workflow",
    name="Workflow orchestration",
    version="0.1.0",
    description="Workflows of typed tasks run on RQ workers (engine: issue 3).",
    depends_on=("platform",),
    menus=("Security",),
)
