"""What a capability declares about itself, validated before anything is registered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.security.roles import ROLE_NAMES

if TYPE_CHECKING:
    from app.composition.registrar import Registrar

SEMVER = r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$"


class CompositionError(RuntimeError):
    """Capabilities that cannot be composed; the message names them."""


class CapabilityMeta(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")
    name: str = Field(min_length=1, max_length=120)
    version: str = Field(pattern=SEMVER)
    description: str = ""
    depends_on: tuple[str, ...] = ()
    # Role name -> (view-menu regex, permission regex) rules added to that role.
    role_permissions: dict[str, tuple[tuple[str, str], ...]] = {}
    menus: tuple[str, ...] = ()

    @field_validator("role_permissions")
    @classmethod
    def _known_roles(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(ROLE_NAMES))
        if unknown:
            raise ValueError(f"unknown role(s) {unknown}; roles are {list(ROLE_NAMES)}")
        return value

    @field_validator("depends_on")
    @classmethod
    def _no_self_dependency(cls, value: tuple[str, ...], info: Any) -> tuple[str, ...]:
        if info.data.get("id") in value:
            raise ValueError("a capability cannot depend on itself")
        return value


HealthFn = Callable[[], "str | dict[str, Any]"]


@dataclass(frozen=True)
class Capability:
    """A capability: its metadata, its ``register`` entry point and an optional health check."""

    meta: CapabilityMeta
    register: Callable[[Registrar], None]
    health: HealthFn | None = None

    @classmethod
    def build(
        cls,
        register: Callable[[Registrar], None],
        health: HealthFn | None = None,
        **meta: Any,
    ) -> Capability:
        return cls(CapabilityMeta(**meta), register, health)
