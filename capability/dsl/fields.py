"""Field types shared by the definition models and the task types' ``with`` models."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import (
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from capability.dsl.durations import DURATION_PATTERN, parse_duration
from capability.dsl.expressions import is_template

__all__ = [
    "CALLABLE_PATTERN",
    "IDENTIFIER_PATTERN",
    "NAME_PATTERN",
    "PATTERN_MESSAGES",
    "QUEUE_PATTERN",
    "RENDERED",
    "TASK_ID_PATTERN",
    "TEMPLATE_JSON_SCHEMA",
    "Duration",
    "PositiveDuration",
    "QueueName",
    "Templated",
    "WorkflowName",
    "rendered",
]

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
TASK_ID_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
QUEUE_PATTERN = NAME_PATTERN
IDENTIFIER_PATTERN = r"^[a-z_][a-z0-9_]*$"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
CALLABLE_PATTERN = rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*$"

# What each pattern means, for messages a user can act on instead of a regex.
PATTERN_MESSAGES = {
    NAME_PATTERN: "must start with a lowercase letter and use only lowercase letters, digits,"
                  " '-' and '_' (at most 63 characters)",
    TASK_ID_PATTERN: "must start with a lowercase letter and use only lowercase letters, digits"
                     " and '_' (at most 63 characters)",
    IDENTIFIER_PATTERN: "must use only lowercase letters, digits and '_', and not start with"
                        " a digit",
    CALLABLE_PATTERN: 'must name a function literally, as "package.module:function"',
}

TEMPLATE_JSON_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"\{\{|\{%|\{#",
    "description": "a template, checked when it is rendered",
}

# Validation context flag: values were rendered, so a `{{` is data, not a template.
RENDERED = "rendered"


def rendered(info: Any) -> bool:
    context = getattr(info, "context", None)
    return bool(context and context.get(RENDERED))


class _AllowTemplate:
    """Metadata letting a template string stand in for a typed value until it is rendered."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(
            value: Any, inner: core_schema.ValidatorFunctionWrapHandler,
            info: core_schema.ValidationInfo,
        ) -> Any:
            if is_template(value) and not rendered(info):
                return value
            return inner(value)

        return core_schema.with_info_wrap_validator_function(validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"anyOf": [handler(schema), TEMPLATE_JSON_SCHEMA]}

    def __repr__(self) -> str:
        return "Templated"


T = TypeVar("T")

# `Templated[int]`: an int, or a template string until the engine renders it.
Templated = Annotated[T, _AllowTemplate()]


def _duration(value: Any) -> Any:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


_DURATION_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": DURATION_PATTERN},
    ],
    "description": "seconds, or a duration like 30s, 5m, 1h",
}

# Seconds as a float; `30s`, `5m`, `1h`, `250ms` and plain numbers are accepted.
Duration = Annotated[float, BeforeValidator(_duration), WithJsonSchema(_DURATION_SCHEMA)]
PositiveDuration = Annotated[
    float, BeforeValidator(_duration), Field(gt=0), WithJsonSchema(_DURATION_SCHEMA)
]

WorkflowName = Annotated[str, Field(pattern=NAME_PATTERN)]
QueueName = Annotated[str, Field(pattern=QUEUE_PATTERN)]
