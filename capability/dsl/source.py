"""Definition text (YAML or JSON) to data, with syntax errors a user can find by line."""

from __future__ import annotations

import json
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from capability.dsl.issues import ValidationIssue, issue

__all__ = ["MAX_DEPTH", "MAX_VALUES", "SourceError", "load_source", "parse_source"]

# Past these a document is not a workflow but an attack on the validator (YAML aliases
# can expand a small text into billions of values).
MAX_VALUES = 200_000
MAX_DEPTH = 64


class SourceError(ValueError):
    """The text is not a readable document; ``errors`` holds one issue at ``$``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.issue: ValidationIssue = issue("$", message)
        self.errors: list[ValidationIssue] = [self.issue]


class _Loader(yaml.SafeLoader):
    pass


# `since: 2024-01-01` stays the text the author wrote; JSON has no dates either.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    # PyYAML keeps the last of two equal keys; a second `retry:` is a mistake to report.
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            key = loader.construct_object(key_node)
            if key in seen:
                raise ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor("tag:yaml.org,2002:map", _mapping)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"duplicate key {key!r}")
        data[key] = value
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _load_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_json_pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise SourceError(f"invalid JSON at {where}: {exc.msg}") from None
    except ValueError as exc:
        raise SourceError(f"invalid JSON: {exc}") from None


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "unreadable document"
        raise SourceError(f"invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise SourceError(f"invalid YAML: {exc}") from None


def _check_size(data: Any) -> None:
    stack = [(data, 0)]
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise SourceError(f"the definition is too large (more than {MAX_VALUES:,} values)")
        if depth > MAX_DEPTH:
            raise SourceError(f"the definition is nested too deeply (more than {MAX_DEPTH} levels)")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def parse_source(
    text: str | bytes, fmt: str | None = None
) -> tuple[Any, list[ValidationIssue]]:
    """YAML or JSON text to ``(data, [])``, or ``(None, [issue])`` when it cannot be read.

    ``fmt``: ``"yaml"``, ``"json"`` or ``None`` to detect (JSON when the text starts with
    ``{`` or ``[`` and parses as JSON, else YAML). The issue is at path ``$`` and names the
    line and column of a syntax error.
    """
    try:
        return load_source(text, fmt), []
    except SourceError as exc:
        return None, list(exc.errors)


def load_source(text: str | bytes, fmt: str | None = None) -> Any:
    """As ``parse_source``, raising ``SourceError`` (a ``ValueError``) instead."""
    if fmt not in (None, "yaml", "json"):
        raise SourceError(f"unknown format {fmt!r}: use 'yaml' or 'json'")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SourceError("the definition is not UTF-8 text") from None
    if not text.strip():
        raise SourceError("the definition is empty")
    try:
        if fmt == "json":
            data = _load_json(text)
        elif fmt == "yaml" or not text.lstrip().startswith(("{", "[")):
            data = _load_yaml(text)
        else:
            try:
                data = _load_json(text)
            except SourceError as json_error:
                # `{name: x, tasks: [...]}` is YAML flow style: not JSON, still fine.
                try:
                    data = _load_yaml(text)
                except SourceError:
                    raise json_error from None
    except RecursionError:
        raise SourceError(
            f"the definition is nested too deeply (more than {MAX_DEPTH} levels)"
        ) from None
    _check_size(data)
    return data
