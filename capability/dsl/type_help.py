"""The help of a task type: what the task palette (Workflows -> Task types) and the
editor's help panel show, made from the type's registration only.

``task_type_help`` reads the JSON Schema of the type's ``with`` model (the one
``definition_json_schema`` publishes), its description, the connection types it accepts
and its example; nothing is written per type here, so a connector of another package
gets the same help as a built-in one. The result is plain data (JSON-serialisable):
one template macro renders it for both pages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import yaml

from capability.dsl.durations import DURATION_PATTERN
from capability.dsl.expressions import find_expressions, referenced_tasks
from capability.dsl.fields import PATTERN_MESSAGES, TEMPLATE_JSON_SCHEMA
from capability.dsl.types import TaskType, TaskTypeRegistry
from capability.dsl.types import registry as default_registry

__all__ = ["example_task", "palette", "task_type_help"]

_TEMPLATE = TEMPLATE_JSON_SCHEMA["pattern"]
# Nested objects are listed under their field (``auth.type``), this deep at most: no
# built-in model nests deeper, and a recursive model must not recurse here.
_MAX_DEPTH = 3
_WORDS = {"string": "text", "integer": "integer", "number": "number", "boolean": "boolean",
          "object": "object", "array": "list", "null": "null"}


def palette(registry: TaskTypeRegistry | None = None) -> list[dict[str, Any]]:
    """The help of every registered task type, by name."""
    return [task_type_help(t) for t in (default_registry if registry is None else registry)]


def task_type_help(task_type: TaskType) -> dict[str, Any]:
    """``{name, description, fields, connection_types, example}``, each field ``{name,
    type, required, default, templated, description, choices, rules}``; ``example`` is the
    YAML of a task using the type ("" when the type declares none). Shared: read it,
    never change it."""
    # Made once per registered type (the editor shows every type's help on each load):
    # keyed by the object too, since a TaskType compares without its example.
    return _help(task_type, id(task_type))


@lru_cache(maxsize=512)
def _help(task_type: TaskType, _identity: int) -> dict[str, Any]:
    schema = task_type.with_model.model_json_schema()
    task = example_task(task_type)
    return {
        "name": task_type.name,
        "description": task_type.description,
        "fields": list(_fields(schema, schema.get("$defs", {}), "", 0)),
        "connection_types": list(task_type.connection_types),
        "example": _yaml([task]) if task else "",
    }


def example_task(task_type: TaskType) -> dict[str, Any] | None:
    """A task of the type with its example ``with``, depending on the tasks the example's
    templates read (a reader copying it sees what else it needs)."""
    if not task_type.example:
        return None
    example = dict(task_type.example)
    upstream = sorted({name for _, text in find_expressions(example, "with")
                       for name in referenced_tasks(text)})
    task: dict[str, Any] = {"id": f"my_{task_type.name}", "type": task_type.name}
    if upstream:
        task["depends_on"] = upstream
    task["with"] = example
    return task


def _yaml(data: Any) -> str:
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True,
                              default_flow_style=False, width=72))


# ---------------------------------------------------------------- fields


def _fields(node: dict[str, Any], defs: dict[str, Any], prefix: str,
            depth: int) -> Iterator[dict[str, Any]]:
    """A row per property of the object ``node``, each followed by the rows of the
    object it holds (``auth.type``, ``attachments[].name``)."""
    required = set(node.get("required", []))
    for name, prop in node.get("properties", {}).items():
        branches = list(_branches(prop, defs))
        values = [v for b in branches for v in b.get("enum", [])]
        values += [b["const"] for b in branches if "const" in b]
        patterns = [b["pattern"] for b in branches
                    if "pattern" in b and b["pattern"] not in (_TEMPLATE, DURATION_PATTERN)]
        yield {
            "name": prefix + name,
            "type": _kind(prop, defs),
            "required": name in required,
            # null: not set, which the row says by showing no default.
            "default": None if prop.get("default") is None else json.dumps(prop["default"]),
            "templated": _templated(prop, defs),
            "description": " ".join(str(prop.get("description", "")).split()),
            "choices": [v if isinstance(v, str) else json.dumps(v) for v in values],
            "rules": [PATTERN_MESSAGES.get(p, f"must match {p}") for p in patterns],
        }
        if depth + 1 < _MAX_DEPTH:
            for inner, suffix in _objects(prop, defs):
                yield from _fields(inner, defs, f"{prefix}{name}{suffix}.", depth + 1)


def _deref(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = defs[str(node["$ref"]).rsplit("/", 1)[-1]]
    return node


def _branches(node: dict[str, Any], defs: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The alternatives a value may take: ``anyOf`` flattened, ``$ref`` followed, and the
    template and null branches left out (the row says those another way)."""
    node = _deref(node, defs)
    if "anyOf" in node:
        for branch in node["anyOf"]:
            yield from _branches(branch, defs)
    elif node.get("pattern") != _TEMPLATE and node.get("type") != "null":
        yield node


def _objects(prop: dict[str, Any], defs: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """The objects with fields of their own that the property holds: itself (``.``) or
    its list's items (``[].``)."""
    for branch in _branches(prop, defs):
        if "properties" in branch:
            yield branch, ""
        elif branch.get("type") == "array" and "items" in branch:
            items = _deref(branch["items"], defs)
            if "properties" in items:
                yield items, "[]"


def _templated(prop: dict[str, Any], defs: dict[str, Any]) -> bool:
    """Whether a ``{{ ... }}`` template may stand for a value that is checked once it is
    rendered: a number, a choice, an object. Plain text always may: that goes unsaid."""
    if all(b.get("type") == "string" and not b.get("enum") and not b.get("pattern")
           for b in _branches(prop, defs)):
        return False
    node = _deref(prop, defs)
    found = False
    for branch in node.get("anyOf", []):
        branch = _deref(branch, defs)
        if branch.get("pattern") == _TEMPLATE:
            found = True
        elif "anyOf" in branch and _templated(branch, defs):
            found = True
    return found


def _kind(node: dict[str, Any], defs: dict[str, Any]) -> str:
    """How a person says a schema's type: "text", "integer, 1 to 100000", "list of
    text", "object: name -> text", "duration", "any"."""
    node = _deref(node, defs)
    if "anyOf" in node:
        if any(b.get("pattern") == DURATION_PATTERN for b in _branches(node, defs)):
            return "duration (seconds, or 30s, 5m, 1h)"
        kinds = [_kind(b, defs) for b in node["anyOf"]
                 if _deref(b, defs).get("pattern") != _TEMPLATE
                 and _deref(b, defs).get("type") != "null"]
        return " or ".join(dict.fromkeys(kinds)) or "any"
    if "properties" in node:
        return "object"
    if "enum" in node or "const" in node:
        values = node.get("enum", [node.get("const")])
        return "text" if all(isinstance(v, str) for v in values) else "value"
    kind = node.get("type")
    if isinstance(kind, list):
        return " or ".join(_WORDS.get(str(k), str(k)) for k in kind)
    if kind == "array":
        items = node.get("items")
        inner = _kind(items, defs) if isinstance(items, dict) else "any"
        return "list" if inner == "any" else f"list of {_plural(inner)}"
    if kind == "object":
        values = node.get("additionalProperties")  # a schema, or true (anything)
        if isinstance(values, dict) and values:
            return f"object: name \u2192 {_kind(values, defs)}"
        return "object"
    if kind is None:
        return "any"
    return _WORDS.get(kind, kind) + _bounds(node)


def _plural(kind: str) -> str:
    return kind if kind == "text" or " " in kind else kind + "s"


def _bounds(node: dict[str, Any]) -> str:
    low = node.get("minimum")
    high = node.get("maximum")
    if low is not None and high is not None:
        return f", {low:g} to {high:g}"
    if low is not None:
        return f", at least {low:g}"
    if "exclusiveMinimum" in node:
        return f", more than {node['exclusiveMinimum']:g}"
    if high is not None:
        return f", at most {high:g}"
    return ""

