"""The composition engine: capabilities declare themselves and register all-or-nothing."""

from app.composition.metadata import Capability, CapabilityMeta, CompositionError
from app.composition.registrar import Registrar

__all__ = ["Capability", "CapabilityMeta", "CompositionError", "Registrar"]
