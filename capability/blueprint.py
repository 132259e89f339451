"""Registration of the workflow orchestration capability with the composition engine."""

from __future__ import annotations

import time
from typing import Any

from app.audit.registry import AuditSpec
from app.composition import Capability, Registrar
from app.security.roles import AUTHOR, OPERATOR, VIEWER

# Imported here, not in register(): Alembic must see these tables even when a start
# fails to register the capability.
from capability.connections.models import Connection
from capability.models import EventTrigger, Secret, Workflow


def _team(obj: Any) -> str | None:
    return obj.team.name if obj.team is not None else None


def _tenant(obj: Any) -> str | None:
    return obj.team.tenant.name if obj.team is not None else None


def _publish(app: Any, run_id: str, coalesce: bool) -> None:
    # capability.live loads on the first publish: a scheduler never publishes.
    from capability import live

    live.publish(app, run_id, coalesce)


def _install_publisher(app: Any) -> None:
    """The engine tells a run's watchers through ``capability.live`` (both roles)."""
    from capability.engine.dispatch import PUBLISHER

    app.extensions[PUBLISHER] = _publish


def _check_egress(app: Any) -> None:
    """A bad EGRESS_DENY or EGRESS_ALLOW entry stops the start, not every http task."""
    from capability.egress import EgressPolicy

    EgressPolicy.from_config(app.config)


def _install_lifecycle(_app: Any) -> None:
    """A workflow deleted disables its triggers (``triggers.lifecycle``)."""
    from app.extensions import db
    from capability.triggers import lifecycle

    lifecycle.install(db.session)


def _install_ticker(app: Any) -> None:
    """Every scheduler process decides due schedule ticks, each loop (``ticker``)."""
    from app.runtime.worker import runtime_hooks

    hooks = runtime_hooks(app)
    if _tick not in hooks.tick:
        hooks.tick.append(_tick)


# A scheduler loops about once a second: a tick due within the next second is waited
# for, so that it is decided on its second rather than up to a loop later.
WAKE_AHEAD = 1.0


def _tick(app: Any) -> None:
    # Loaded when there is work, not at import: a scheduler's memory is counted.
    from app.extensions import db
    from capability.triggers import clock, due

    now = clock.now()
    at = due.soonest(db.session, now)
    if at is None or (at - now).total_seconds() > WAKE_AHEAD:
        return
    # Work is near: the code that does it is loaded before the wait, not after.
    from capability.engine.dispatch import dispatcher_for
    from capability.triggers import passes

    passes.warm()
    # Slept in slices, the clock read again after each: a test's clock (a file) may
    # move meanwhile, or stand still past the deadline.
    deadline = time.monotonic() + WAKE_AHEAD
    while now < at:
        left = min(deadline - time.monotonic(), (at - now).total_seconds())
        if left <= 0:
            return
        time.sleep(min(left, 0.05))
        now = clock.now()
    passes.run_all(db.session, dispatcher_for(app, coalesce=True), now,
                   int(app.config.get("SCHEDULE_CATCHUP_MAX") or 100),
                   int(app.config.get("EVENT_MAX_DEPTH") or 10))


def _rotate_connections(session: Any, config: Any) -> int:
    from capability.connections import service as connections
    from capability.engine.settings import EngineSettings

    return connections.rotate(session, EngineSettings.from_config(config))


def _install_connectors() -> None:
    from capability.connections import resolve as connection_store
    from capability.connectors import registry as connectors

    connectors.install()
    connectors.use_resolver(connection_store.for_attempt)


def register(reg: Registrar) -> None:
    from capability.dsl import extensions as dsl_extensions
    from capability.engine import reaper
    from capability.mcp.cli import mcp_command
    from capability.secrets.cli import ROTATE_ALSO, secrets_group
    from capability.transport.cli import reap_command

    # Connectors become task types in every process: in the web now (it validates
    # definitions with their models; one that cannot load stops the start), in a worker
    # when it first runs a task (a scheduler that never does stays small).
    if reg.web:
        _install_connectors()
    else:
        dsl_extensions.on_registry(_install_connectors)
    if _rotate_connections not in [f for _, f in ROTATE_ALSO]:
        ROTATE_ALSO.append(("connection(s)", _rotate_connections))
    reg.on_ready(_install_publisher)
    reg.on_ready(_check_egress)
    # Workers and schedulers run the reaper; `flask --app app reap` runs one pass.
    reg.on_ready(reaper.install)
    reg.on_ready(_install_ticker)
    reg.add_cli(reap_command)
    reg.add_cli(secrets_group)  # `flask --app app secrets rotate`
    reg.add_cli(mcp_command)  # `flask --app app mcp`: MCP over stdio
    reg.audited(
        Workflow,
        AuditSpec(target_type="workflow", exclude=frozenset({"updated_at", "created_at"}),
                  team_of=_team, tenant_of=_tenant),
    )
    # The value is only ever the ciphertext, recorded as "***": an update says the value
    # changed (and who changed it) without showing any value.
    reg.audited(
        Secret,
        AuditSpec(target_type="secret", exclude=frozenset({"updated_at", "created_at"}),
                  redact=frozenset({"ciphertext"}), team_of=_team, tenant_of=_tenant),
    )
    if not reg.web:
        # The worker role: no screens, REST APIs or Socket.IO server, and none of their
        # modules imported (marshmallow schemas, forms, templates). Live updates are
        # still published (capability.live, through the Redis message queue). The
        # schedulers load the triggers' tables when they have trigger work
        # (``triggers.due``); workflows are deleted, and triggers changed, in the web.
        return
    # Web only (Alembic, run by the web role, sees these tables through it).
    from capability.triggers.models import Schedule, Webhook

    reg.on_ready(_install_lifecycle)
    reg.audited(
        Schedule,
        AuditSpec(target_type="schedule",
                  exclude=frozenset({"updated_at", "created_at", "next_due", "decided_until",
                                     "buffered_for"}),
                  team_of=_team, tenant_of=_tenant),
    )
    # The token is stored hashed: its hash never appears in the trail either.
    reg.audited(
        Webhook,
        AuditSpec(target_type="webhook", exclude=frozenset({"updated_at", "created_at"}),
                  redact=frozenset({"token_hash"}), team_of=_team, tenant_of=_tenant),
    )
    reg.audited(
        EventTrigger,
        AuditSpec(target_type="event_trigger", exclude=frozenset({"updated_at", "created_at"}),
                  team_of=_team, tenant_of=_tenant),
    )
    # The secret fields are one ciphertext: the trail says it changed, never its value.
    reg.audited(
        Connection,
        AuditSpec(target_type="connection", exclude=frozenset({"updated_at", "created_at"}),
                  redact=frozenset({"ciphertext"}), team_of=_team, tenant_of=_tenant),
    )
    from capability import live_web
    from capability.api import WorkflowApi
    from capability.connections.api import ConnectionApi
    from capability.connections.views import ConnectionView
    from capability.mcp import web as mcp_web
    from capability.runs.api import RunApi
    from capability.runs.views import FailedTaskView, RunView, install_template_helpers
    from capability.secrets.api import SecretApi
    from capability.secrets.views import SecretView
    from capability.templates.api import TemplateApi, WorkflowBundleApi
    from capability.templates.views import TemplateView
    from capability.transport.api import TransportApi
    from capability.transport.views import TransportView
    from capability.triggers import hooks_web
    from capability.triggers import views as trigger_views
    from capability.triggers.api import ScheduleApi
    from capability.triggers.backfill_api import BackfillApi
    from capability.triggers.event_api import EventApi, EventTriggerApi
    from capability.triggers.views import EventTriggerView, ScheduleView, WebhookView
    from capability.triggers.webhook_api import WebhookApi
    from capability.views import WorkflowView

    reg.add_view(
        TransportView, "Workers & queues", icon="fa-server", category="Security",
    )
    reg.add_api(TransportApi)
    # Authors write their teams' secrets; Operators and Viewers read the names (the
    # role rules below; the service and the row scope keep each to its teams).
    reg.add_view(SecretView, "Secrets", icon="fa-lock", category="Security")
    reg.add_api(SecretApi)
    reg.add_api(WorkflowApi)
    reg.add_api(WorkflowBundleApi)  # /api/v1/workflows/<id>/export, /import
    reg.add_api(TemplateApi)
    reg.add_view(WorkflowView, "Workflows", icon="fa-sitemap", category="Workflows",
                 category_icon="fa-sitemap")
    reg.add_api(RunApi)
    reg.add_api(ConnectionApi)
    reg.add_api(ScheduleApi)
    reg.add_api(WebhookApi)
    reg.add_api(EventTriggerApi)
    reg.add_api(EventApi)
    reg.add_api(BackfillApi)
    reg.register_blueprint(hooks_web.hooks)  # POST /hooks/<token>
    reg.on_ready(hooks_web.install)
    reg.register_blueprint(mcp_web.mcp_web)  # /mcp: MCP over streamable HTTP
    reg.on_ready(mcp_web.install)
    reg.add_view(RunView, "Runs", icon="fa-play-circle", category="Workflows")
    reg.add_view(FailedTaskView, "Failed tasks", icon="fa-exclamation-triangle",
                 category="Workflows")
    reg.add_view(ConnectionView, "Connections", icon="fa-plug", category="Workflows")
    reg.add_view(TemplateView, "Templates", icon="fa-clone", category="Workflows")
    # A page of WorkflowView (can_read on Workflows): the link adds its menu entry.
    reg.add_link("Task types", href="WorkflowView.task_types", icon="fa-puzzle-piece",
                 category="Workflows")
    reg.add_view(ScheduleView, "Schedules", icon="fa-clock-o", category="Triggers",
                 category_icon="fa-bolt")
    reg.add_view(WebhookView, "Webhooks", icon="fa-plug", category="Triggers")
    reg.add_view(EventTriggerView, "Event triggers", icon="fa-bolt", category="Triggers")
    reg.on_ready(trigger_views.install_template_helpers)
    reg.on_ready(live_web.install)  # Socket.IO namespace /runs: live run updates
    reg.on_ready(install_template_helpers)


def health() -> dict[str, Any]:
    from flask import current_app

    from app.runtime.redis_conn import get_redis
    from capability.transport import service as transport

    return transport.health(get_redis(current_app), current_app.config["RQ_QUEUES"])


_read = ("Workflows", "can_read")
_menu = ("Workflows", "menu_access")  # the "Workflows" menu category and its list entry
_runs = ("Runs", "can_read")
_control = ("Runs", "can_read|can_control")
# "Workflows" -> "Runs", "Failed tasks", "Connections", "Task types"
_run_menus = ("Runs|Failed tasks|Connections|Task types|Templates", "menu_access")
# The template library: every reader may browse it; using one creates a workflow, which
# the workflow service allows to an Author of the team only.
_templates = ("Templates", "can_read")
_trigger_menus = ("Triggers|Schedules|Webhooks|Event triggers", "menu_access")
# "Security" -> "Secrets": the only entry of that menu a team member holds.
_secret_menus = ("Security|Secrets", "menu_access")

capability = Capability.build(
    register,
    health,
    id="workflow",
    name="Workflow orchestration",
    version="0.3.0",
    description="Workflows of typed tasks, versioned; runs on RQ workers, watched live.",
    depends_on=("platform",),
    role_permissions={
        AUTHOR: (("Workflows", "can_read|can_write|can_run"), _control, _menu, _run_menus,
                 _templates,
                 ("Connections", "can_read|can_write"),
                 ("Secrets", "can_read|can_write"), _secret_menus,
                 ("Schedules", "can_read|can_write|can_control"),
                 ("Webhooks|EventTriggers", "can_read|can_write"), ("Events", "can_post"),
                 _trigger_menus),
        OPERATOR: (("Workflows", "can_read|can_run"), _control, _menu, _run_menus, _templates,
                   ("Connections", "can_read"), ("Secrets", "can_read"), _secret_menus,
                   ("Schedules", "can_read|can_control"), ("Webhooks|EventTriggers", "can_read"),
                   ("Events", "can_post"), _trigger_menus),
        VIEWER: (_read, _runs, _menu, _run_menus, _templates, ("Connections", "can_read"),
                 ("Secrets", "can_read"), _secret_menus,
                 ("Schedules|Webhooks|EventTriggers", "can_read"), _trigger_menus),
    },
    menus=("Workflows", "Triggers", "Security"),
)
