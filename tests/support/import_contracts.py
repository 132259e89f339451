"""An import-linter contract type: no import cycle between modules.

Import-linter's own ``acyclic_siblings`` squashes each package to one node, so it also
refuses two packages that import each other through unrelated modules (``app.audit``'s
API uses ``app.api_support``, which records failures with ``app.audit.recorder``);
that is not a loop of imports. This contract looks at modules: it fails on any strongly
connected set of modules (``a -> b -> ... -> a``), function-level imports included,
``if TYPE_CHECKING`` imports not (``exclude_type_checking_imports``). Registered in
pyproject.toml (``contract_types``); ``make lint`` runs it with the other contracts.
"""

from __future__ import annotations

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """The strongly connected sets of two or more ``modules`` (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = []
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work.append((root, sorted(graph.find_modules_directly_imported_by(root) & modules)))
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.find_modules_directly_imported_by(nxt)
                                             & modules)))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


class NoCycles(Contract):
    """``type = "no_cycles"``; ``packages``: the packages whose modules may not loop."""

    type_name = "no_cycles"
    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        modules: set[str] = set()
        for package in self.packages:  # type: ignore[attr-defined]
            modules |= {package} | graph.find_descendants(package)
        loops = cycles(graph, modules)
        details = []
        for group in loops:
            # One loop through the set: an import a -> b of the set, then b's shortest way
            # back to a (every module on it is in the set, since a reaches b).
            first = group[0]
            second = sorted(graph.find_modules_directly_imported_by(first) & set(group))[0]
            back = graph.find_shortest_chain(importer=second, imported=first) or (second, first)
            details.append({"modules": group, "loop": [first, *back]})
        return ContractCheck(kept=not loops, warnings=[], metadata={"cycles": details})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for cycle in check.metadata["cycles"]:
            output.print_error(f"Import cycle between {len(cycle['modules'])} modules:")
            output.print_error("  " + " -> ".join(cycle["loop"]))
            output.new_line()


