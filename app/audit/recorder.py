"""Writes audit events: automatically for audited models, explicitly for the rest.

The ``after_flush`` hook sees every insert, update and delete of an audited model and
appends one event for each to the chain in the same transaction, so a change and its
event commit (or roll back) together. Events that are not row changes (logins,
denied requests, run controls) go through ``record``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, scoped_session
from sqlalchemy.orm.attributes import NO_VALUE

from app.audit import chain, keys
from app.audit.context import current_actor
from app.audit.registry import REDACTED, AuditSpec, json_safe, spec_for
from app.security.actor import Actor

PENDING_KEY = "apg_audit_pending"
_row_events_off: ContextVar[bool] = ContextVar("apg_audit_row_events_off", default=False)
_update_action: ContextVar[str | None] = ContextVar("apg_audit_update_action", default=None)


@contextmanager
def update_action(name: str) -> Iterator[None]:
    """Name the action of row updates in this block (``rollback``, ``delete`` for a soft
    delete, ``version``...) so the trail says what a person did, not which column moved."""
    token = _update_action.set(name)
    try:
        yield
    finally:
        _update_action.reset(token)


@contextmanager
def row_events_off() -> Iterator[None]:
    """Stop per-row events for bulk system work that records its own summary events
    (FAB creating ~90 permissions at first start would otherwise bury the trail)."""
    token = _row_events_off.set(True)
    try:
        yield
    finally:
        _row_events_off.reset(token)


def _value(spec: AuditSpec, key: str, value: Any) -> Any:
    if key in spec.redact:
        return REDACTED if value not in (None, "") else value
    return json_safe(value)


def _columns(obj: Any, spec: AuditSpec) -> list[str]:
    mapper = inspect(obj).mapper
    return [attr.key for attr in mapper.column_attrs if attr.key not in spec.exclude]


def _related_names(items: Any) -> Any:
    if items is None or isinstance(items, str):
        return items
    if isinstance(items, (list, set, tuple)):
        return sorted(str(item) for item in items)
    return str(items)  # a many-to-one relation: the related row's name


def snapshot(obj: Any, spec: AuditSpec) -> dict[str, Any]:
    state = inspect(obj)
    data = {}
    for key in _columns(obj, spec):
        loaded = state.attrs[key].loaded_value
        data[key] = _value(spec, key, None if loaded is NO_VALUE else loaded)
    for rel in spec.relations:
        loaded = state.attrs[rel].loaded_value
        if loaded is not NO_VALUE:
            data[rel] = _related_names(loaded)
    return data


def diff(obj: Any, spec: AuditSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    state = inspect(obj)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for key in _columns(obj, spec):
        hist = state.attrs[key].history
        if not hist.has_changes():
            continue
        old = hist.deleted[0] if hist.deleted else None
        new = hist.added[0] if hist.added else None
        if old == new:
            continue
        before[key] = _value(spec, key, old)
        after[key] = _value(spec, key, new)
    for rel in spec.relations:
        hist = state.attrs[rel].history
        if not (hist.added or hist.deleted):
            continue
        if state.mapper.relationships[rel].uselist:
            kept = list(hist.unchanged or [])
            before[rel] = _related_names(kept + list(hist.deleted or []))
            after[rel] = _related_names(kept + list(hist.added or []))
        else:
            before[rel] = _related_names(hist.deleted[0] if hist.deleted else None)
            after[rel] = _related_names(hist.added[0] if hist.added else None)
    return before, after


def _target_id(obj: Any, spec: AuditSpec) -> str | None:
    if spec.target_id_of is not None:
        return spec.target_id_of(obj)
    key = inspect(obj).mapper.primary_key_from_instance(obj)
    parts = [str(part) for part in key if part is not None]
    return ",".join(parts) or None


def build_event(
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str | None = None,
    *,
    outcome: str = "success",
    team: str | None = None,
    tenant: str | None = None,
    before: Any = None,
    after: Any = None,
) -> dict[str, Any]:
    return {
        "at": dt.datetime.now(dt.UTC),
        "tenant": tenant or actor.tenant,
        "actor": actor.username,
        "action": action,
        "target_type": target_type,
        "target_id": None if target_id is None else str(target_id),
        "team": team,
        "outcome": outcome,
        "ip": actor.ip,
        "request_id": actor.request_id,
        "via": actor.via,
        "before": json_safe(before),
        "after": json_safe(after),
    }


def _event_for(obj: Any, spec: AuditSpec, action: str, actor: Actor, before: Any, after: Any):
    return build_event(
        actor,
        action,
        spec.target_type,
        _target_id(obj, spec),
        team=spec.team_of(obj) if spec.team_of else None,
        tenant=spec.tenant_of(obj) if spec.tenant_of else None,
        before=before,
        after=after,
    )


def _orm_events(session: Session) -> list[dict[str, Any]]:
    if _row_events_off.get():
        return []
    actor: Actor | None = None
    events = []

    def who() -> Actor:
        nonlocal actor
        if actor is None:
            actor = current_actor()
        return actor

    for obj in list(session.new):
        spec = spec_for(obj)
        if spec is not None:
            events.append(_event_for(obj, spec, "create", who(), None, snapshot(obj, spec)))
    for obj in list(session.dirty):
        spec = spec_for(obj)
        if spec is None or not session.is_modified(obj, include_collections=True):
            continue
        before, after = diff(obj, spec)
        if after or before:
            action = _update_action.get() or "update"
            events.append(_event_for(obj, spec, action, who(), before, after))
    for obj in list(session.deleted):
        spec = spec_for(obj)
        if spec is not None:
            events.append(_event_for(obj, spec, "delete", who(), snapshot(obj, spec), None))
    return events


def _after_flush(session: Session, _flush_context: Any) -> None:
    events = session.info.pop(PENDING_KEY, []) + _orm_events(session)
    if events:
        chain.append(session.connection(), events, keys.current())


def _before_commit(session: Session) -> None:
    pending = session.info.pop(PENDING_KEY, [])
    if pending:
        chain.append(session.connection(), pending, keys.current())


def _after_rollback(session: Session) -> None:
    session.info.pop(PENDING_KEY, None)


def record(session: Session | scoped_session, event_: dict[str, Any]) -> None:
    """Queue an event; it is chained at the next flush or commit of ``session``."""
    target = session() if isinstance(session, scoped_session) else session
    target.info.setdefault(PENDING_KEY, []).append(event_)


def install(session: scoped_session) -> None:
    """Attach the hooks to the application's session (idempotent)."""
    for name, fn in (
        ("after_flush", _after_flush),
        ("before_commit", _before_commit),
        ("after_rollback", _after_rollback),
    ):
        if not event.contains(session, name, fn):
            event.listen(session, name, fn)
