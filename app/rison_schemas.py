"""FAB's ``@rison`` checks each request's ``q`` with ``jsonschema.validate``, which
first validates the *schema* against the JSON Schema meta-schema: the same constant
schema, every request, about a third of a list's time (``GET /api/v1/runs/``: 10 of
28 ms, bench/mcp.py). Here FAB's API module gets a ``jsonschema`` whose ``validate``
checks each schema once and keeps its validator; the answer for the instance is the
same (``best_match`` of the errors, as ``jsonschema.validate`` raises)."""

from __future__ import annotations

import threading
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for


class _SchemasCheckedOnce:
    ValidationError = jsonschema.ValidationError

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # id(schema) -> (schema, validator): the schema kept so its id is not reused
        self._validators: dict[int, tuple[Any, Any]] = {}

    def validate(self, instance: Any, schema: Any, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:  # a caller asking for something else gets jsonschema itself
            jsonschema.validate(instance, schema, *args, **kwargs)
            return
        kept = self._validators.get(id(schema))
        if kept is None or kept[0] is not schema:
            cls = validator_for(schema)
            cls.check_schema(schema)
            kept = (schema, cls(schema))
            with self._lock:
                self._validators[id(schema)] = kept
        error = best_match(kept[1].iter_errors(instance))
        if error is not None:
            raise error

    def __getattr__(self, name: str) -> Any:
        return getattr(jsonschema, name)


def install() -> None:
    """Give FAB's API module the schemas-checked-once ``jsonschema`` (idempotent)."""
    import flask_appbuilder.api as fab_api

    if not isinstance(fab_api.jsonschema, _SchemasCheckedOnce):
        fab_api.jsonschema = _SchemasCheckedOnce()  # type: ignore[assignment]
