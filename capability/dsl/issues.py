"""Validation issues: ``{"path": "tasks[2].depends_on[0]", "message": "..."}``.

The same shape as ``app.errors`` (whose helpers are not imported: that module pulls in
Flask, and this package must stay importable by workers and tools without it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from capability.dsl.fields import PATTERN_MESSAGES

__all__ = ["ValidationIssue", "error_path", "issue", "pydantic_issues", "sorted_issues"]


# A plain dict (not a TypedDict) so it passes where ``app.errors`` takes list[dict[str, str]].
ValidationIssue = dict[str, str]


def issue(path: str, message: str) -> ValidationIssue:
    return {"path": path or "$", "message": message}


def error_path(loc: Iterable[Any]) -> str:
    """('tasks', 2, 'depends_on', 0) -> 'tasks[2].depends_on[0]'; () -> '$'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "$"


_PLAIN = {
    "extra_forbidden": "unknown field",
    "missing": "field required",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be a list",
    "string_type": "must be text",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
}


def _message(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in _PLAIN:
        return _PLAIN[kind]
    if kind == "string_pattern_mismatch":
        return PATTERN_MESSAGES.get(ctx.get("pattern", ""), f"must match {ctx.get('pattern')}")
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "too_short":
        count = ctx.get("min_length")
        return f"must have at least {count} {'item' if count == 1 else 'items'}"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        return message[len("Value error, "):]
    if message.startswith("Input should be "):
        return "must be " + message[len("Input should be "):]
    return message


def pydantic_issues(exc: ValidationError, prefix: Iterable[Any] = ()) -> list[ValidationIssue]:
    """Pydantic's errors as issues whose paths start at ``prefix``."""
    head = tuple(prefix)
    return [issue(error_path(head + tuple(err["loc"])), _message(err)) for err in exc.errors()]


# Issues read in the order of the document: top-level fields as DSL.md lists them, then
# task by task (tasks[10] after tasks[9]) and field by field within a task. Deeper than
# that (inside `with`) the order they were found in is kept: pydantic's is the input's.
_FIELD_ORDER = {
    name: rank for rank, name in enumerate((
        "name", "description", "params", "defaults", "max_active_runs", "tasks", "id", "type",
        "with", "depends_on", "trigger_rule", "when", "for_each", "max_parallel", "retry",
        "timeout", "compensate", "queue",
    ))
}
_PATH_TOKEN = re.compile(r"\[(\d+)\]|\.?([^.\[]+)")


def _path_key(path: str) -> list[tuple[int, int, str]]:
    if path == "$":
        return []
    key = []
    for index, name in _PATH_TOKEN.findall(path)[:3]:
        if index:
            key.append((1, int(index), ""))
        else:
            key.append((0, _FIELD_ORDER.get(name, len(_FIELD_ORDER)), name))
    return key


def sorted_issues(issues: Iterable[ValidationIssue]) -> list[ValidationIssue]:
    """Issues in document order, each reported once (stable for equal paths)."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for item in issues:
        marker = (item["path"], item["message"])
        if marker not in seen:
            seen.add(marker)
            unique.append(item)
    return sorted(unique, key=lambda item: _path_key(item["path"]))
