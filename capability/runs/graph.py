"""A run's task graph as data for the browser.

Pure functions (no Flask, no database). The browser lays the graph out and draws it
(static/js/graph.js with the vendored dagre): the server only says what is in it, so the
run page, its live updates and the workflow page all draw with the same code.
"""

from __future__ import annotations

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
            # A run's JSON holds a page of the elements and their total.
            items = (task.get("items_total", len(task.get("items") or ()))
                     if task else 0)
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
