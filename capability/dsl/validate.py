"""Validate a workflow definition: its shape, then the rules a schema cannot say.

Every problem is reported in one pass. The semantic checks read the raw data, guarded
field by field, so a task with one bad field still has its other fields checked and a
typo in one place does not hide a mistake in another.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from capability.dsl.expressions import (
    ITEM_NAMES,
    SCOPE_NAMES,
    check_syntax,
    find_expressions,
    referenced_keys,
    referenced_names,
    referenced_tasks,
)
from capability.dsl.fields import IDENTIFIER_PATTERN, PATTERN_MESSAGES
from capability.dsl.graph import find_cycles
from capability.dsl.issues import ValidationIssue, issue, pydantic_issues, sorted_issues
from capability.dsl.models import ParamSpec, WorkflowDefinition
from capability.dsl.params import check_param_value
from capability.dsl.types import TaskTypeRegistry
from capability.dsl.types import registry as default_registry

__all__ = ["ValidationResult", "validate_definition", "validate_source"]

_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
# `params.get('x')` and `tasks.items()` read dict methods, not parameters or tasks.
_DICT_METHODS = frozenset(name for name in dir(dict) if not name.startswith("_"))


@dataclass(frozen=True)
class ValidationResult:
    """``errors`` in document order; ``definition`` only when there are none."""

    errors: list[ValidationIssue] = field(default_factory=list)
    definition: WorkflowDefinition | None = None

    @property
    def valid(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "errors": list(self.errors)}


def validate_source(
    text: str | bytes, fmt: str | None = None, registry: TaskTypeRegistry | None = None
) -> ValidationResult:
    """``parse_source`` then ``validate_definition``; a syntax error is the one issue."""
    # On first use: workers validate stored definitions (objects), never text, so they
    # do without YAML (~1 MB a process).
    from capability.dsl.source import parse_source

    data, errors = parse_source(text, fmt)
    if errors:
        return ValidationResult(errors=errors)
    return validate_definition(data, registry)


def validate_definition(data: Any, registry: TaskTypeRegistry | None = None) -> ValidationResult:
    """Check a definition (parsed YAML/JSON data) against the schema and semantic rules."""
    if not isinstance(data, dict):
        message = "a workflow definition must be an object with name and tasks"
        return ValidationResult(errors=[issue("$", message)])
    errors: list[ValidationIssue] = []
    definition = None
    try:
        definition = WorkflowDefinition.model_validate(data)
    except ValidationError as exc:
        errors.extend(pydantic_issues(exc))
    errors.extend(_Semantics(data, default_registry if registry is None else registry).check())
    errors = sorted_issues(errors)
    return ValidationResult(errors=errors, definition=None if errors else definition)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _known_names(names: set[str]) -> str:
    return ", ".join(sorted(names)) if names else "none"


class _Semantics:
    def __init__(self, data: dict[str, Any], registry: TaskTypeRegistry) -> None:
        self.registry = registry
        raw_tasks = data.get("tasks")
        listed = raw_tasks if isinstance(raw_tasks, list) else []
        self.tasks = [(index, raw) for index, raw in enumerate(listed) if isinstance(raw, dict)]
        self.ids = {index: raw["id"] for index, raw in self.tasks if _str(raw.get("id"))}
        self.known_ids = set(self.ids.values())
        raw_params = data.get("params")
        self.params = raw_params if isinstance(raw_params, dict) else {}
        # Unknown-parameter checks need the declarations; a broken `params` skips them.
        self.param_names: set[str] | None = (
            set(self.params) if raw_params is None or isinstance(raw_params, dict) else None
        )
        self.errors: list[ValidationIssue] = []

    def add(self, path: str, message: str) -> None:
        self.errors.append(issue(path, message))

    def check(self) -> list[ValidationIssue]:
        self._params()
        self._duplicate_ids()
        for index, raw in self.tasks:
            self._dependencies(index, raw)
            self._type_and_with(f"tasks[{index}]", raw, ("tasks", index))
            compensate = raw.get("compensate")
            if isinstance(compensate, dict):
                self._type_and_with(
                    f"tasks[{index}].compensate", compensate, ("tasks", index, "compensate")
                )
            for path, text, item_ok in self._expressions(index, raw):
                self._expression(path, text, item_ok)
            self._waits_alone(index, raw)
            if raw.get("max_parallel") is not None and raw.get("for_each") is None:
                self.add(f"tasks[{index}].max_parallel", "only applies to a task with for_each")
        self._cycles()
        return self.errors

    def _waits_alone(self, index: int, raw: dict[str, Any]) -> None:
        """An ``agent`` step waits for one output, of one task (AGENTS.md): it cannot fan
        out per item, nor be an undo step (which runs while the run is ending)."""
        if raw.get("type") == "agent" and raw.get("for_each") is not None:
            self.add(f"tasks[{index}].for_each", "an agent step cannot have for_each: it "
                     "waits for one output; give the agent the list in with.inputs instead")
        compensate = raw.get("compensate")
        if isinstance(compensate, dict) and compensate.get("type") == "agent":
            self.add(f"tasks[{index}].compensate.type", "an undo step cannot be an agent "
                     "step: compensation runs without waiting for anyone")

    def _params(self) -> None:
        for name, raw in self.params.items():
            path = f"params.{name}"
            if not _IDENTIFIER.match(str(name)):
                self.add(path, "parameter names " + PATTERN_MESSAGES[IDENTIFIER_PATTERN])
            try:
                spec = ParamSpec.model_validate(raw)
            except ValidationError:
                continue  # its shape errors come from the whole-definition pass
            for position, choice in enumerate(spec.enum or []):
                problem = check_param_value(spec.model_copy(update={"enum": None}), choice)
                if problem:
                    self.add(f"{path}.enum[{position}]", problem)
            if spec.default is None:
                continue
            if spec.required:
                self.add(f"{path}.default", "a required parameter takes no default:"
                                            " remove default or required")
            problem = check_param_value(spec, spec.default)
            if problem:
                self.add(f"{path}.default", problem)

    def _duplicate_ids(self) -> None:
        first: dict[str, int] = {}
        for index, task_id in self.ids.items():
            if task_id in first:
                self.add(f"tasks[{index}].id",
                         f"duplicate task id '{task_id}' (also used by tasks[{first[task_id]}])")
            else:
                first[task_id] = index

    def _depends_on(self, raw: dict[str, Any]) -> list[str | None]:
        deps = raw.get("depends_on")
        return [_str(dep) for dep in deps] if isinstance(deps, list) else []

    def _dependencies(self, index: int, raw: dict[str, Any]) -> None:
        own_id = self.ids.get(index)
        seen: set[str] = set()
        for position, dep in enumerate(self._depends_on(raw)):
            path = f"tasks[{index}].depends_on[{position}]"
            if dep is None:
                continue
            if dep == own_id:
                self.add(path, "a task cannot depend on itself")
            elif dep not in self.known_ids:
                self.add(path, f"unknown task '{dep}'")
            elif dep in seen:
                self.add(path, f"'{dep}' is listed twice")
            seen.add(dep)

    def _cycles(self) -> None:
        graph: dict[str, list[str]] = {}
        index_of: dict[str, int] = {}
        for index, raw in self.tasks:
            task_id = self.ids.get(index)
            if task_id is not None and task_id not in graph:
                graph[task_id] = [dep for dep in self._depends_on(raw) if dep is not None]
                index_of[task_id] = index
        for cycle in find_cycles(graph):
            self.add(f"tasks[{index_of[cycle[0]]}].depends_on",
                     "dependency cycle: " + " -> ".join(cycle))

    def _type_and_with(self, path: str, raw: dict[str, Any], loc: tuple[Any, ...]) -> None:
        type_name = _str(raw.get("type"))
        if not type_name:
            return  # missing or not text: the shape pass says so
        task_type = self.registry.find(type_name)
        if task_type is None:
            known = self.registry.names()
            close = difflib.get_close_matches(type_name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.add(f"{path}.type", f"unknown task type '{type_name}'{hint};"
                                     f" known types: {', '.join(known)}")
            return
        with_data = raw.get("with")
        if with_data is not None and not isinstance(with_data, dict):
            return
        error = task_type.with_errors(with_data or {})
        if error is not None:
            self.errors.extend(pydantic_issues(error, (*loc, "with")))

    def _expressions(self, index: int, raw: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
        """``(path, text, item_in_scope)`` for every templated string of the task."""
        base = f"tasks[{index}]"
        expands = raw.get("for_each") is not None
        # `when` and `for_each` are evaluated once, before the task expands per item.
        for path, text in find_expressions(raw.get("when"), f"{base}.when"):
            yield path, text, False
        for path, text in find_expressions(raw.get("for_each"), f"{base}.for_each"):
            yield path, text, False
        for path, text in find_expressions(raw.get("with"), f"{base}.with"):
            yield path, text, expands
        compensate = raw.get("compensate")
        if isinstance(compensate, dict):
            for path, text in find_expressions(compensate.get("with"), f"{base}.compensate.with"):
                yield path, text, expands

    def _expression(self, path: str, text: str, item_ok: bool) -> None:
        error = check_syntax(text)
        if error:
            self.add(path, f"invalid expression: {error}")
            return
        allowed = set(SCOPE_NAMES) | (set(ITEM_NAMES) if item_ok else set())
        for name in sorted(referenced_names(text) - allowed):
            if name in ITEM_NAMES:
                self.add(path, f"'{name}' is only available in a task with for_each")
            else:
                usable = ", ".join(n for n in (*SCOPE_NAMES, *ITEM_NAMES) if n in allowed)
                self.add(path, f"unknown name '{name}'; expressions can use {usable}")
        for task_id in sorted(referenced_tasks(text) - self.known_ids - _DICT_METHODS):
            self.add(path, f"unknown task '{task_id}'")
        if self.param_names is not None:
            for name in sorted(referenced_keys(text, "params") - self.param_names - _DICT_METHODS):
                self.add(path, f"unknown parameter '{name}' (declared: "
                               f"{_known_names(self.param_names)})")
