"""``validate`` and ``jsonpath``: connectors that need no connection (CONNECTORS.md,
"Built-in connectors")."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from capability.connectors.sdk import Connector, ConnectorError, Context, Templated, With


class ValidateWith(With):
    """Checks value against a JSON Schema (2020-12). Output: value, when valid; else the
    task fails, not retried, listing every violation with its JSON path."""

    value: Any = Field(default=None, description="what to check")
    schema_: Templated[dict[str, Any]] = Field(alias="schema", description=(
        "a JSON Schema (2020-12), checked when the workflow is saved"))

    @field_validator("schema_")
    @classmethod
    def _a_schema(cls, value: Any) -> Any:
        if isinstance(value, dict):
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import SchemaError

            try:
                Draft202012Validator.check_schema(value)
            except SchemaError as exc:
                where = "/".join(str(p) for p in exc.path) or "(root)"
                raise ValueError(f"not a valid JSON Schema at {where}: {exc.message}") from None
        return value


def violations(value: Any, schema: dict[str, Any]) -> list[str]:
    """Every way ``value`` breaks the JSON Schema (2020-12), each with its JSON path
    (``$.items[2].name: 'x' is not of type 'integer'``), in path order."""
    from jsonschema import Draft202012Validator

    def where(parts: Any) -> str:
        out = "$"
        for part in parts:
            out += f"[{part}]" if isinstance(part, int) else f".{part}"
        return out

    found = sorted(Draft202012Validator(schema).iter_errors(value),
                   key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [f"{where(e.absolute_path)}: {e.message}" for e in found]


class ValidateConnector(Connector):
    type = "validate"
    With = ValidateWith
    example = {"value": "{{ tasks.fetch.output.json }}",
               "schema": {"type": "object", "required": ["id"],
                          "properties": {"id": {"type": "integer"}}}}

    def execute(self, context: Context) -> Any:
        with_: ValidateWith = context.with_
        lines = violations(with_.value, with_.schema_)
        if lines:
            raise ConnectorError(f"value does not match the schema ({len(lines)} "
                                 f"violation{'s' if len(lines) > 1 else ''}): "
                                 + "; ".join(lines))
        return with_.value


class JsonPathWith(With):
    """Queries input with a JSONPath expression. Output: the list of matches, or with
    first: true the first match (null when none)."""

    input: Any = Field(default=None, description="the data to query")
    path: str = Field(min_length=1, description=(
        "a JSONPath expression, checked when saved (unless it is a template)"))
    first: Templated[bool] = Field(default=False, description=(
        "the first match (null when none) instead of the list"))

    @field_validator("path")
    @classmethod
    def _a_path(cls, value: str) -> str:
        if "{{" in value or "{%" in value:
            return value  # a template: checked once rendered
        from jsonpath_ng.ext import parse

        try:
            parse(value)
        except Exception as exc:  # the library raises several types for bad syntax
            raise ValueError(f"not a JSONPath expression: {exc}") from None
        return value


class JsonPathConnector(Connector):
    type = "jsonpath"
    With = JsonPathWith
    example = {"input": "{{ tasks.fetch.output.json }}", "path": "$.items[*].id"}

    def execute(self, context: Context) -> Any:
        from jsonpath_ng.ext import parse

        with_: JsonPathWith = context.with_
        try:
            expression = parse(with_.path)
        except Exception as exc:
            raise ConnectorError(f"with.path: not a JSONPath expression: {exc}") from None
        matches = [m.value for m in expression.find(with_.input)]
        if with_.first:
            return matches[0] if matches else None
        return matches
