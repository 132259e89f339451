"""Which models are audited automatically, and how each one is described.

A capability registers its models here (``audited(Model, ...)``); the session hook
in ``app.audit.recorder`` then writes an event for every insert, update and delete of
them, in the same transaction as the change.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

REDACTED = "***"


@dataclass(frozen=True)
class AuditSpec:
    target_type: str
    exclude: frozenset[str] = frozenset()
    redact: frozenset[str] = frozenset()
    relations: tuple[str, ...] = ()
    team_of: Callable[[Any], str | None] | None = None
    tenant_of: Callable[[Any], str | None] | None = None
    target_id_of: Callable[[Any], str | None] | None = None


_SPECS: dict[type, AuditSpec] = {}


def audited(model: type, spec: AuditSpec) -> None:
    _SPECS[model] = spec


def spec_for(obj: Any) -> AuditSpec | None:
    for klass in type(obj).__mro__:
        found = _SPECS.get(klass)
        if found is not None:
            return found
    return None


def registered() -> dict[type, AuditSpec]:
    return dict(_SPECS)


def json_safe(value: Any) -> Any:
    """Turn a column value into something JSON keeps as it is (for hashing)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        finite = value == value and value not in (float("inf"), float("-inf"))
        return value if finite else str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [json_safe(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, bytes):
        return REDACTED
    return str(value)
