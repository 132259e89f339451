"""Run parameters: checked against the workflow's declared ``params`` when a run starts."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from capability.dsl.issues import ValidationIssue, issue
from capability.dsl.models import ParamSpec, WorkflowDefinition

__all__ = ["check_param_value", "validate_params"]

_EXPECTED = {
    "string": "must be text",
    "integer": "must be a whole number",
    "number": "must be a number",
    "boolean": "must be true or false",
    "object": "must be an object",
    "array": "must be a list",
}


def _matches(param_type: str, value: Any) -> bool:
    if param_type == "string":
        return isinstance(value, str)
    if param_type == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if param_type == "number":
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and math.isfinite(value)
    if param_type == "boolean":
        return isinstance(value, bool)
    if param_type == "object":
        return isinstance(value, dict)
    if param_type == "array":
        return isinstance(value, list)
    return False


def check_param_value(spec: ParamSpec, value: Any) -> str | None:
    """Why ``value`` does not fit ``spec`` (type, then enum), or ``None`` when it does."""
    if not _matches(spec.type, value):
        return f"{_EXPECTED[spec.type]} (the parameter's type is {spec.type})"
    if spec.enum is not None and value not in spec.enum:
        return "must be one of " + ", ".join(_show(choice) for choice in spec.enum)
    return None


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _normalise(spec: ParamSpec, value: Any) -> Any:
    # JSON clients may send 5.0 for an integer; templates should see 5.
    if spec.type == "integer" and isinstance(value, float):
        return int(value)
    return value


def validate_params(
    definition: WorkflowDefinition, params: Mapping[str, Any] | None
) -> tuple[dict[str, Any], list[ValidationIssue]]:
    """The run's parameters with defaults applied, and every problem at once.

    Declared parameters come first in declaration order; one that is neither given nor
    defaulted is ``None`` unless it is required (an error at ``params.<name>``).
    """
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        return {}, [issue("params", "must be an object of parameter values")]
    resolved: dict[str, Any] = {}
    errors: list[ValidationIssue] = []
    for name, spec in definition.params.items():
        path = f"params.{name}"
        if name in params:
            problem = check_param_value(spec, params[name])
            if problem:
                errors.append(issue(path, problem))
            resolved[name] = _normalise(spec, params[name])
        elif spec.default is not None:
            resolved[name] = copy.deepcopy(spec.default)
        elif spec.required:
            errors.append(issue(path, "parameter required"))
        else:
            resolved[name] = None
    declared = ", ".join(definition.params) or None
    for name in params:
        if name not in definition.params:
            hint = f"this workflow takes {declared}" if declared else "this workflow takes none"
            errors.append(issue(f"params.{name}", f"unknown parameter ({hint})"))
    return resolved, errors
