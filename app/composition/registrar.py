"""What a capability's ``register`` hands its views, APIs and links to.

Nothing reaches Flask or FAB while ``register`` runs: calls are staged, and the
engine applies them only once ``register`` has returned. If applying fails half way,
``Snapshot.restore`` removes what was added, so a failed capability leaves no view,
API, route, menu entry or permission behind.

``reg.role`` is the process role. In the ``worker`` role (RQ workers, the scheduler)
there is no FAB AppBuilder: a capability should import its view and API modules only
``if reg.web`` (they are what costs the memory), and whatever it stages for the web
(views, APIs, links, separators, blueprints) is dropped; CLI commands, audit specs
and ``on_ready`` callbacks apply in both roles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from flask import Blueprint, Flask
from sqlalchemy import delete, select

from app.audit.registry import AuditSpec, audited
from app.extensions import DbSession


@dataclass
class _Op:
    kind: str
    target: Any
    kwargs: dict[str, Any] = field(default_factory=dict)


# Staged operations that only exist in the web role.
WEB_KINDS = frozenset({"view", "view_no_menu", "api", "link", "separator", "blueprint"})


class Registrar:
    def __init__(self, capability_id: str, config: dict[str, Any], role: str = "web") -> None:
        self.capability_id = capability_id
        self.config = config
        self.role = role
        self._ops: list[_Op] = []

    @property
    def web(self) -> bool:
        """True in the web role: register views, APIs, menus and blueprints."""
        return self.role == "web"

    # -- what a capability calls -------------------------------------------------
    def add_view(self, view: type, name: str, **kwargs: Any) -> None:
        self._ops.append(_Op("view", view, {"name": name, **kwargs}))

    def add_view_no_menu(self, view: type) -> None:
        self._ops.append(_Op("view_no_menu", view))

    def add_api(self, api: type) -> None:
        self._ops.append(_Op("api", api))

    def add_link(self, name: str, href: str, **kwargs: Any) -> None:
        self._ops.append(_Op("link", None, {"name": name, "href": href, **kwargs}))

    def add_separator(self, category: str) -> None:
        self._ops.append(_Op("separator", None, {"category": category}))

    def register_blueprint(self, blueprint: Blueprint) -> None:
        self._ops.append(_Op("blueprint", blueprint))

    def add_cli(self, command: click.Command) -> None:
        self._ops.append(_Op("cli", command))

    def audited(self, model: type, spec: AuditSpec) -> None:
        self._ops.append(_Op("audit", model, {"spec": spec}))

    def on_ready(self, callback: Callable[[Flask], None]) -> None:
        """Run ``callback(app)`` once every capability has registered."""
        self._ops.append(_Op("ready", callback))

    # -- what the engine calls ---------------------------------------------------
    @property
    def operations(self) -> list[_Op]:
        """What will be applied (in the worker role, without the web-only operations)."""
        if self.web:
            return list(self._ops)
        return [op for op in self._ops if op.kind not in WEB_KINDS]

    def validate(self, app: Flask) -> None:
        """Catch what would fail half way before anything is applied."""
        names: set[str] = set()
        for op in self.operations:
            if op.kind in {"view", "view_no_menu", "api"}:
                if not isinstance(op.target, type):
                    raise TypeError(f"{op.kind} expects a class, got {op.target!r}")
                name = op.target.__name__
            elif op.kind == "blueprint":
                name = op.target.name
            else:
                continue
            if name in app.blueprints or name in names:
                raise ValueError(f"blueprint name {name!r} is already registered")
            names.add(name)

    def apply(self, app: Flask, appbuilder: Any) -> list[Callable[[Flask], None]]:
        ready = []
        operations = self.operations
        for op in operations:
            if op.kind == "view":
                appbuilder.add_view(op.target, **op.kwargs)
            elif op.kind in {"view_no_menu", "api"}:
                appbuilder.add_view_no_menu(op.target)
            elif op.kind == "link":
                appbuilder.add_link(**op.kwargs)
            elif op.kind == "separator":
                appbuilder.add_separator(op.kwargs["category"])
            elif op.kind == "blueprint":
                app.register_blueprint(op.target)
        # Only once every route is in place do the process-wide registrations happen.
        for op in operations:
            if op.kind == "cli":
                app.cli.add_command(op.target)
            elif op.kind == "audit":
                audited(op.target, op.kwargs["spec"])
            elif op.kind == "ready":
                ready.append(op.target)
        return ready


class Snapshot:
    """The app's registrations before a capability is applied, to roll back to."""

    def __init__(self, app: Flask, appbuilder: Any, session: DbSession, with_db: bool) -> None:
        from flask_appbuilder.security.sqla.models import Permission, PermissionView, ViewMenu

        self.with_db = with_db
        self.blueprints = set(app.blueprints)
        self.view_functions = set(app.view_functions)
        self.rules = list(app.url_map.iter_rules())
        # No AppBuilder in the worker role: nothing of FAB's to roll back.
        self.baseviews = list(appbuilder.baseviews) if appbuilder is not None else []
        menu = appbuilder.menu if appbuilder is not None else None
        self.menu = [(item, list(item.childs)) for item in menu.menu] if menu else []
        # Before the first migration there are no permission tables to snapshot.
        self.pv_ids: set[int] = set()
        self.vm_ids: set[int] = set()
        self.perm_ids: set[int] = set()
        if with_db:
            self.pv_ids = set(session.execute(select(PermissionView.id)).scalars())
            self.vm_ids = set(session.execute(select(ViewMenu.id)).scalars())
            self.perm_ids = set(session.execute(select(Permission.id)).scalars())

    def restore(self, app: Flask, appbuilder: Any, session: DbSession) -> None:
        from flask_appbuilder.security.sqla.models import (
            Permission,
            PermissionView,
            ViewMenu,
            assoc_permissionview_role,
        )

        for name in set(app.blueprints) - self.blueprints:
            del app.blueprints[name]
        for endpoint in set(app.view_functions) - self.view_functions:
            del app.view_functions[endpoint]
        if len(list(app.url_map.iter_rules())) != len(self.rules):
            old = app.url_map
            app.url_map = app.url_map_class(
                [rule.empty() for rule in self.rules],
                default_subdomain=old.default_subdomain,
                strict_slashes=old.strict_slashes,
                merge_slashes=old.merge_slashes,
                redirect_defaults=old.redirect_defaults,
                converters=old.converters,
                sort_parameters=old.sort_parameters,
                sort_key=old.sort_key,
                host_matching=old.host_matching,
            )
        if appbuilder is not None:
            appbuilder.baseviews[:] = self.baseviews
        if appbuilder is not None and appbuilder.menu:
            appbuilder.menu.menu = [item for item, _ in self.menu]
            for item, childs in self.menu:
                item.childs = childs
        session.rollback()
        if not self.with_db:
            return
        new_pvs = set(session.execute(select(PermissionView.id)).scalars()) - self.pv_ids
        if new_pvs:
            session.execute(
                delete(assoc_permissionview_role).where(
                    assoc_permissionview_role.c.permission_view_id.in_(new_pvs)
                )
            )
            session.execute(delete(PermissionView).where(PermissionView.id.in_(new_pvs)))
        new_vms = set(session.execute(select(ViewMenu.id)).scalars()) - self.vm_ids
        if new_vms:
            session.execute(delete(ViewMenu).where(ViewMenu.id.in_(new_vms)))
        new_perms = set(session.execute(select(Permission.id)).scalars()) - self.perm_ids
        if new_perms:
            session.execute(delete(Permission).where(Permission.id.in_(new_perms)))
        session.commit()
