"""Drawing a run for the browser: the task graph's layout.

Pure functions (no Flask, no database): the run page renders the graph as SVG from
``layout()`` and the live script only recolours it. Times are shown by ``app.times``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NODE_W, NODE_H = 172, 46
GAP_X, GAP_Y, PAD = 64, 18, 12
LABEL_CHARS = 22


@dataclass(frozen=True)
class Node:
    task_id: str
    type: str
    layer: int
    row: int
    x: float
    y: float

    @property
    def label(self) -> str:
        text = self.task_id
        return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "\u2026"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: str


@dataclass(frozen=True)
class Layout:
    nodes: list[Node]
    edges: list[Edge]
    width: float
    height: float


def layers(upstream: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Task id -> its column: 0 without upstreams, else one past its deepest upstream."""
    depth: dict[str, int] = {}

    def visit(task_id: str, seen: frozenset[str]) -> int:
        if task_id in depth:
            return depth[task_id]
        deps = [d for d in upstream.get(task_id, ()) if d in upstream and d not in seen]
        value = 1 + max((visit(d, seen | {task_id}) for d in deps), default=-1)
        depth[task_id] = value
        return value

    for task_id in upstream:
        visit(task_id, frozenset())
    return depth


def _order(columns: list[list[str]], upstream: Mapping[str, Sequence[str]]) -> None:
    """Barycentre ordering: each task sits near the mean row of its upstreams, which
    keeps most edges short and uncrossed (two sweeps are plenty for real workflows)."""
    for _ in range(2):
        for index in range(1, len(columns)):
            rows = {t: r for r, t in enumerate(columns[index - 1])}
            original = {t: r for r, t in enumerate(columns[index])}

            def key(task_id: str, rows: dict[str, int] = rows,
                    original: dict[str, int] = original) -> tuple[float, int]:
                parents = [rows[d] for d in upstream.get(task_id, ()) if d in rows]
                centre = sum(parents) / len(parents) if parents else float(original[task_id])
                return centre, original[task_id]

            columns[index].sort(key=key)


def layout(upstream: Mapping[str, Sequence[str]], types: Mapping[str, str]) -> Layout:
    """Columns left to right by dependency depth; edges as curves from right to left side."""
    depth = layers(upstream)
    columns: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for task_id in upstream:  # definition order within a column
        columns[depth[task_id]].append(task_id)
    _order(columns, upstream)
    tallest = max((len(c) for c in columns), default=0)
    nodes: dict[str, Node] = {}
    for col, ids in enumerate(columns):
        offset = (tallest - len(ids)) * (NODE_H + GAP_Y) / 2
        for row, task_id in enumerate(ids):
            nodes[task_id] = Node(
                task_id, types.get(task_id, ""), col, row,
                PAD + col * (NODE_W + GAP_X), PAD + offset + row * (NODE_H + GAP_Y),
            )
    edges = []
    for task_id, deps in upstream.items():
        for dep in dict.fromkeys(deps):
            if dep in nodes and task_id in nodes:
                edges.append(Edge(dep, task_id, _curve(nodes[dep], nodes[task_id])))
    width = PAD * 2 + len(columns) * NODE_W + max(len(columns) - 1, 0) * GAP_X
    height = PAD * 2 + tallest * NODE_H + max(tallest - 1, 0) * GAP_Y
    return Layout([nodes[t] for t in upstream], edges, width, height)


def _curve(a: Node, b: Node) -> str:
    x1, y1 = a.x + NODE_W, a.y + NODE_H / 2
    x2, y2 = b.x - 4, b.y + NODE_H / 2  # stop short: the arrow head ends at the box
    bend = max((x2 - x1) / 2, 24)
    return f"M{x1:g},{y1:g} C{x1 + bend:g},{y1:g} {x2 - bend:g},{y2:g} {x2:g},{y2:g}"
