"""The task dependency graph: cycles (for validation) and a run order (for the engine).

Iterative throughout: a chain of 1,000 tasks is a valid workflow and must not hit
Python's recursion limit.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping, Sequence

from capability.dsl.models import WorkflowDefinition

__all__ = ["find_cycles", "topological_order", "upstream_map"]


def _components(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Strongly connected components (Kosaraju)."""
    order: list[str] = []
    seen: set[str] = set()
    for root in graph:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(graph[root]))]
        while stack:
            node, edges = stack[-1]
            child = next((n for n in edges if n not in seen), None)
            if child is None:
                stack.pop()
                order.append(node)
            else:
                seen.add(child)
                stack.append((child, iter(graph[child])))
    reverse: dict[str, list[str]] = {node: [] for node in graph}
    for node, targets in graph.items():
        for target in targets:
            reverse[target].append(node)
    components: list[list[str]] = []
    assigned: set[str] = set()
    for root in reversed(order):
        if root in assigned:
            continue
        assigned.add(root)
        component, pending = [], [root]
        while pending:
            node = pending.pop()
            component.append(node)
            for other in reverse[node]:
                if other not in assigned:
                    assigned.add(other)
                    pending.append(other)
        components.append(component)
    return components


def _cycle_through(start: str, graph: Mapping[str, Sequence[str]], members: set[str]) -> list[str]:
    """The shortest cycle from ``start`` back to itself inside one component."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in graph[node]:
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if target in members and target not in parent:
                parent[target] = node
                queue.append(target)
    return [start, start]  # unreachable for a real component


def find_cycles(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One cycle per group of mutually dependent nodes, e.g. ``[["a", "b", "a"]]``.

    ``graph`` maps a node to the nodes it points at (a task to its ``depends_on``);
    edges to unknown nodes and self-loops are ignored (validation reports those itself).
    Each cycle starts at the group's node that comes first in ``graph``.
    """
    clean = {
        node: [target for target in targets if target in graph and target != node]
        for node, targets in graph.items()
    }
    position = {node: index for index, node in enumerate(clean)}
    cycles = []
    for component in _components(clean):
        if len(component) < 2:
            continue
        start = min(component, key=position.__getitem__)
        cycles.append(_cycle_through(start, clean, set(component)))
    return sorted(cycles, key=lambda cycle: position[cycle[0]])


def upstream_map(definition: WorkflowDefinition) -> dict[str, list[str]]:
    """Task id -> ids of its upstream tasks, in definition order."""
    return {task.id: list(task.depends_on) for task in definition.tasks}


def topological_order(definition: WorkflowDefinition) -> list[str]:
    """Task ids with every task after its upstreams; ties keep definition order.

    Raises ``ValueError`` for a cycle (a validated definition has none).
    """
    upstream = upstream_map(definition)
    downstream: dict[str, list[str]] = {task_id: [] for task_id in upstream}
    waiting = {task_id: len(set(deps)) for task_id, deps in upstream.items()}
    for task_id, deps in upstream.items():
        for dep in set(deps):
            downstream[dep].append(task_id)
    position = {task_id: index for index, task_id in enumerate(upstream)}
    ready = [(position[t], t) for t, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, task_id = heapq.heappop(ready)
        order.append(task_id)
        for child in downstream[task_id]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (position[child], child))
    if len(order) != len(upstream):
        raise ValueError("the tasks' dependencies form a cycle")
    return order
