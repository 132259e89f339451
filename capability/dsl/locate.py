"""Where in the author's text an issue lies: ``tasks[2].depends_on[0]`` -> line 14.

Validation issues name a path into the parsed data; an editor wants a line. PyYAML's
composer keeps the position of every node, and JSON is (near enough) YAML, so one walk
over ``yaml.compose`` serves both formats. A path that does not exist in the text (a
missing required field) is placed on its nearest existing parent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

__all__ = ["locate", "locate_issues"]

_TOKEN = re.compile(r"\[(\d+)\]|\.?([^.\[]+)")
_MESSAGE_LINE = re.compile(r"\bline (\d+)\b")


def _tokens(path: str) -> list[int | str]:
    return [int(index) if index else name for index, name in _TOKEN.findall(path)]


def _child(node: yaml.Node, token: int | str) -> tuple[yaml.Node, int] | None:
    """The node under ``node`` at ``token`` and the 0-based line that names it."""
    if isinstance(node, yaml.MappingNode) and isinstance(token, str):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == token:
                return value_node, key_node.start_mark.line
    if isinstance(node, yaml.SequenceNode) and isinstance(token, int):
        if 0 <= token < len(node.value):
            item = node.value[token]
            return item, item.start_mark.line
    return None


def _compose(source_text: str) -> yaml.Node | None:
    try:
        return yaml.compose(source_text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def _line(root: yaml.Node | None, path: str, message: str) -> int | None:
    if not path or path == "$":
        found = _MESSAGE_LINE.search(message)
        return int(found.group(1)) if found else None
    if root is None:
        return None
    node, line = root, root.start_mark.line
    for token in _tokens(path):
        step = _child(node, token)
        if step is None:
            break
        node, line = step
    return line + 1


def locate(source_text: str, path: str, fmt: str | None = None, message: str = "") -> int | None:
    """The 1-based line of ``path`` in ``source_text`` (YAML or JSON), or ``None``.

    ``$`` (the whole document: syntax errors) has no line of its own; the line a
    parser names in ``message`` ("... at line 3, column 5") is used when given. ``fmt``
    is accepted for symmetry with ``parse_source``: both formats are read the same way.
    """
    del fmt  # JSON is read as YAML: the positions are the same
    root = None if path in ("", "$") else _compose(source_text)
    return _line(root, path, message)


def locate_issues(
    source_text: str, issues: Iterable[dict[str, Any]], fmt: str | None = None
) -> list[dict[str, Any]]:
    """Copies of ``issues`` (``{"path", "message"}``) with a ``line`` each (maybe ``None``)."""
    del fmt
    items = list(issues)
    needs_tree = any(str(item.get("path", "$")) not in ("", "$") for item in items)
    root = _compose(source_text) if needs_tree else None
    return [
        {**item, "line": _line(root, str(item.get("path", "$")), str(item.get("message", "")))}
        for item in items
    ]
