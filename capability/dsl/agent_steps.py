"""The ``agent`` task type's ``with`` and the check of an agent's output (AGENTS.md,
"Agent steps").

An agent step waits in ``waiting_input`` until an agent (through MCP ``step_complete``
or ``POST /api/v1/runs/<id>/tasks/<task_id>/complete``) submits its output. The output
is accepted only when it satisfies ``output_schema`` (JSON Schema 2020-12) and every
rule of ``checks``; ``output_errors`` lists every violation, each with its path, so the
agent can fix them all at once. Pure: the engine and the services call the same code.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from capability.dsl.expressions import is_template
from capability.dsl.fields import Templated

__all__ = ["MODEL_HINTS", "AgentCheck", "AgentWith", "output_errors"]

MODEL_HINTS = ("fast", "balanced", "reasoning")
COMPARATORS = ("equals", "matches", "min", "max")


def _jsonpath_error(query: str) -> str | None:
    # Loaded on first use, as in builtin_types: JSONPath's parser tables are large.
    from jsonpath_ng.ext import parse as parse_jsonpath

    try:
        parse_jsonpath(query)
    except Exception as exc:  # JSONPathError, and plain Exception from the lexer
        return str(exc) or type(exc).__name__
    return None


class AgentCheck(BaseModel):
    """A rule the output must pass: every value ``jsonpath`` finds in it (at least one)
    equals ``equals``, matches the regular expression ``matches`` (searched), or is a
    number within ``min`` / ``max``."""

    model_config = ConfigDict(extra="forbid")

    jsonpath: str = Field(min_length=1, description=(
        "a JSONPath query of the output, such as $.total or $.items[*].sku"))
    equals: Any = Field(default=None, description="the value each match must equal")
    matches: str | None = Field(default=None, description=(
        "a regular expression each match (a string) must contain"))
    min: Templated[float | None] = Field(default=None, description=(
        "the smallest number allowed"))
    max: Templated[float | None] = Field(default=None, description=(
        "the largest number allowed"))

    @field_validator("jsonpath")
    @classmethod
    def _a_jsonpath(cls, value: str) -> str:
        if is_template(value):
            return value  # checked once rendered
        error = _jsonpath_error(value)
        if error:
            raise ValueError(f"invalid JSONPath: {error}")
        return value

    @field_validator("matches")
    @classmethod
    def _a_pattern(cls, value: str | None) -> str | None:
        if value is not None and not is_template(value):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _a_rule(self) -> AgentCheck:
        if not set(COMPARATORS) & self.model_fields_set:
            raise ValueError("a check needs equals, matches, min or max")
        low, high = self.min, self.max
        if isinstance(low, float) and isinstance(high, float) and low > high:
            raise ValueError("min is larger than max")
        return self


class AgentWith(BaseModel):
    """Waits in waiting_input, holding no worker, until an agent submits an output that
    satisfies output_schema and every check (MCP step_complete, or POST
    /api/v1/runs/<id>/tasks/<task_id>/complete), or fails it. Output: the submitted
    output."""

    model_config = ConfigDict(extra="forbid")

    instructions: str = Field(min_length=1, description=(
        "what the agent does in this step (a template)"))
    inputs: Templated[dict[str, Any]] = Field(default_factory=dict, description=(
        "the values the agent needs, by name (templates)"))
    output_schema: dict[str, Any] = Field(description=(
        "the JSON Schema (2020-12) the submitted output must satisfy"))
    model_hint: Literal["fast", "balanced", "reasoning"] | None = Field(
        default=None, description="routing advice for the agent: fast, balanced or reasoning")
    checks: list[AgentCheck] = Field(default_factory=list, description=(
        "rules run on the output before it is accepted: {jsonpath, and equals, matches, "
        "min or max}"))

    @field_validator("output_schema")
    @classmethod
    def _a_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.path) or "(root)"
            raise ValueError(f"not a valid JSON Schema at {where}: {exc.message}") from None
        return value


def _path(parts: Any, root: str = "output") -> str:
    out = root
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _schema_errors(output: Any, schema: dict[str, Any]) -> list[dict[str, str]]:
    from jsonschema import Draft202012Validator

    found = sorted(Draft202012Validator(schema).iter_errors(output),
                   key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [{"path": _path(e.absolute_path), "message": e.message} for e in found]


def _number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _check_errors(output: Any, index: int, check: dict[str, Any]) -> list[dict[str, str]]:
    from jsonpath_ng.ext import parse as parse_jsonpath

    query = str(check.get("jsonpath"))
    where = f"checks[{index}] ({query})"
    try:
        found = parse_jsonpath(query).find(output)
    except Exception as exc:  # checked when saved; a rendered template may still be bad
        return [{"path": "output", "message": f"{where}: invalid JSONPath: {exc}"}]
    if not found:
        return [{"path": "output", "message": f"{where}: no value found"}]
    errors = []
    for match in found:
        value = match.value
        # jsonpath_ng writes an index as a field of its own (``items.[1].p``).
        path = f"output.{match.full_path}".replace(".[", "[").replace("output.$", "output")
        wrong: list[str] = []
        if "equals" in check and value != check["equals"]:
            wrong.append(f"{value!r} is not equal to {check['equals']!r}")
        if check.get("matches") is not None and not (
                isinstance(value, str) and re.search(str(check["matches"]), value)):
            wrong.append(f"{value!r} does not match {check['matches']!r}")
        for bound, fails, words in (("min", lambda v, b: v < b, "less than the minimum"),
                                    ("max", lambda v, b: v > b, "more than the maximum")):
            limit = check.get(bound)
            if limit is None:
                continue
            if not _number(value):
                wrong.append(f"{value!r} is not a number (checked against {bound} {limit:g})")
            elif fails(value, limit):
                wrong.append(f"{value!r} is {words} {limit:g}")
        errors += [{"path": path, "message": f"{where}: {text}"} for text in wrong]
    return errors


def output_errors(output: Any, schema: dict[str, Any] | None,
                  checks: list[dict[str, Any]] | None) -> list[dict[str, str]]:
    """Every way ``output`` breaks the schema, then every check it fails: ``[{path,
    message}]``, paths from ``output`` (``output.items[2].name``); empty when accepted.
    The checks run only on an output that satisfies the schema (their paths assume its
    shape), so a schema error is never reported twice."""
    errors = _schema_errors(output, schema or {})
    if errors:
        return errors
    for index, check in enumerate(checks or ()):
        errors += _check_errors(output, index, check)
    return errors
