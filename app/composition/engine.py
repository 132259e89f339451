"""Discovery, dependency ordering and all-or-nothing registration of capabilities."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from flask import Flask
from pydantic import ValidationError

from app.composition.metadata import Capability, CompositionError
from app.composition.registrar import Registrar, Snapshot
from app.extensions import DbSession

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "apg.capabilities"
EXTENSION_KEY = "apg_composition"


@dataclass
class Loaded:
    capability: Capability
    status: str = "pending"  # registered | failed
    error: str | None = None

    @property
    def id(self) -> str:
        return self.capability.meta.id

    def health(self) -> Any:
        if self.status != "registered":
            return "failed"
        if self.capability.health is None:
            return "ok"
        try:
            return self.capability.health()
        except Exception as exc:  # a health probe reports, it never raises
            return f"error: {exc}"

    def as_dict(self) -> dict[str, Any]:
        meta = self.capability.meta
        return {
            "id": meta.id,
            "name": meta.name,
            "version": meta.version,
            "description": meta.description,
            "depends_on": list(meta.depends_on),
            "menus": list(meta.menus),
            "status": self.status,
            "error": self.error,
            "health": self.health(),
        }


@dataclass
class Composition:
    loaded: list[Loaded] = field(default_factory=list)
    role: str = "web"

    def get(self, capability_id: str) -> Loaded | None:
        return next((item for item in self.loaded if item.id == capability_id), None)

    def role_rules(self) -> dict[str, list[tuple[str, str]]]:
        rules: dict[str, list[tuple[str, str]]] = {}
        for item in self.loaded:
            if item.status != "registered":
                continue
            for role, pairs in item.capability.meta.role_permissions.items():
                rules.setdefault(role, []).extend(pairs)
        return rules


def load_reference(ref: str) -> Any:
    """``package.module:attribute`` -> the object."""
    module_name, _, attr = ref.partition(":")
    if not attr:
        raise CompositionError(f"capability reference {ref!r} must look like 'module:attribute'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _coerce(obj: Any, source: str) -> Capability:
    if isinstance(obj, Capability):
        return obj
    if isinstance(obj, dict):
        try:
            return Capability.build(**obj)
        except ValidationError as exc:
            raise CompositionError(f"capability from {source} has invalid metadata: {exc}") from exc
    raise CompositionError(f"{source} is not a Capability (got {type(obj).__name__})")


def discover(references: list[str], use_entry_points: bool) -> list[Capability]:
    found: dict[str, Capability] = {}
    sources: list[tuple[str, Any]] = [(ref, None) for ref in references]
    if use_entry_points:
        sources += [(ep.value, ep) for ep in entry_points(group=ENTRY_POINT_GROUP)]
    for ref, ep in sources:
        obj = ep.load() if ep is not None else load_reference(ref)
        cap = _coerce(obj, ref)
        previous = found.get(cap.meta.id)
        if previous is not None and previous is not cap:
            if previous.meta != cap.meta:
                raise CompositionError(
                    f"two different capabilities share the id {cap.meta.id!r} ({ref})"
                )
            continue
        found[cap.meta.id] = cap
    return list(found.values())


def order(capabilities: list[Capability]) -> list[Capability]:
    """Dependencies first; refuse missing dependencies and cycles, naming them."""
    by_id = {cap.meta.id: cap for cap in capabilities}
    missing = [
        f"{cap.meta.id!r} depends on {dep!r}, which is not installed"
        for cap in capabilities
        for dep in cap.meta.depends_on
        if dep not in by_id
    ]
    if missing:
        raise CompositionError("missing capability dependency: " + "; ".join(missing))

    ordered: list[Capability] = []
    state: dict[str, str] = {}

    def visit(cid: str, path: list[str]) -> None:
        if state.get(cid) == "done":
            return
        if state.get(cid) == "visiting":
            cycle = [*path[path.index(cid):], cid]
            raise CompositionError("capability dependency cycle: " + " -> ".join(cycle))
        state[cid] = "visiting"
        for dep in by_id[cid].meta.depends_on:
            visit(dep, [*path, cid])
        state[cid] = "done"
        ordered.append(by_id[cid])

    for cid in sorted(by_id):
        visit(cid, [])
    return ordered


def compose(
    app: Flask,
    appbuilder: Any,
    session: DbSession,
    capabilities: list[Capability],
    with_db: bool = True,
    role: str = "web",
) -> Composition:
    """Register ``capabilities`` in dependency order. ``role`` is the process role
    (``web`` or ``worker``; ``appbuilder`` is None in the worker role), handed to each
    capability as ``reg.role`` / ``reg.web``."""
    composition = Composition(role=role)
    app.extensions[EXTENSION_KEY] = composition
    ready_callbacks = []
    for cap in order(capabilities):
        loaded = Loaded(cap)
        composition.loaded.append(loaded)
        failed_deps = [
            dep for dep in cap.meta.depends_on
            if (dep_item := composition.get(dep)) is None or dep_item.status != "registered"
        ]
        if failed_deps:
            loaded.status, loaded.error = "failed", f"dependency failed: {', '.join(failed_deps)}"
            log.error("capability %s not registered: %s", cap.meta.id, loaded.error)
            continue
        registrar = Registrar(cap.meta.id, dict(app.config), role=role)
        snapshot = Snapshot(app, appbuilder, session, with_db)
        try:
            cap.register(registrar)
            registrar.validate(app)
            ready_callbacks += registrar.apply(app, appbuilder)
        except Exception as exc:
            snapshot.restore(app, appbuilder, session)
            loaded.status, loaded.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("capability %s failed to register; nothing was kept", cap.meta.id)
            continue
        loaded.status = "registered"
    for callback in ready_callbacks:
        callback(app)
    return composition


def get_composition(app: Flask) -> Composition:
    return app.extensions[EXTENSION_KEY]
