"""A run's task graph as data for the browser, and a few display helpers.

Pure functions (no Flask, no database). The browser lays the graph out and draws it
(static/js/graph.js with the vendored dagre): the server only says what is in it, so the
run page, its live updates and the workflow page all draw with the same code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from capability.dsl import WorkflowDefinition


def graph_data(definition: WorkflowDefinition,
               tasks: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The nodes (definition order) and edges (upstream -> downstream) of the task graph.

    ``tasks`` is a run's tasks by id (``run_dict``/``run_state`` entries): each node then
    has its status and, for a ``for_each`` task, how many elements exist so far. Without
    it (a workflow's page) nodes have no status, and a ``for_each`` over a literal list
    counts that list: an expression is only counted once a run evaluates it.
    """
    nodes = []
    for spec in definition.tasks:
        task = tasks.get(spec.id) if tasks is not None else None
        for_each = spec.for_each is not None
        items: int | None = None
        if for_each and tasks is not None:
            items = len(task.get("items") or ()) if task else 0
        elif isinstance(spec.for_each, list):
            items = len(spec.for_each)
        nodes.append({
            "id": spec.id, "type": spec.type,
            "status": (task or {}).get("status", "pending") if tasks is not None else None,
            "for_each": for_each, "items": items,
        })
    # A valid definition names each upstream once, and only tasks it has.
    edges = [[dep, spec.id] for spec in definition.tasks for dep in spec.depends_on]
    return {"nodes": nodes, "edges": edges}


def utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)


def when(value: dt.datetime | None) -> str:
    """A stored time to the second, ``2025-01-31 14:05:09 UTC``."""
    moment = utc(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def seconds_text(seconds: float) -> str:
    """``840 ms``, ``4.2 s``, ``3 min 5 s``, ``2 h 4 min``."""
    if seconds < 1:
        return f"{max(seconds, 0) * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def duration(started: dt.datetime | None, finished: dt.datetime | None,
             now: dt.datetime | None = None) -> str:
    """How long something took; still going: so far, with a trailing ellipsis."""
    start = utc(started)
    if start is None:
        return ""
    end = utc(finished)
    if end is not None:
        return seconds_text((end - start).total_seconds())
    current = now or dt.datetime.now(dt.UTC)
    return seconds_text((current - start).total_seconds()) + "\u2026"


def parse_iso(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def when_iso(text: str | None) -> str:
    """``when()`` of an ISO 8601 time, as ``run_dict`` gives them."""
    return when(parse_iso(text))


def took(started: str | None, finished: str | None) -> str:
    """How long an attempt (ISO times) took; a dash when it has not started."""
    return duration(parse_iso(started), parse_iso(finished)) or "\u2014"
