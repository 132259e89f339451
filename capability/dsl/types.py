"""The task-type registry: each type's name, ``with`` model and description.

The engine keeps its own handlers by type name; this registry only says what a type
accepts, so the API, the UI and the workers validate ``with`` the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from capability.dsl import extensions
from capability.dsl.fields import RENDERED

__all__ = ["TYPE_NAME_PATTERN", "TaskType", "TaskTypeRegistry", "UnknownTaskType", "registry"]

TYPE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
_TYPE_NAME = re.compile(TYPE_NAME_PATTERN)


class UnknownTaskType(KeyError):
    pass


@dataclass(frozen=True)
class TaskType:
    """A task type. ``with_model`` forbids unknown fields and accepts templates (``Templated``).

    ``example`` (a ``with`` that validates) and ``connection_types`` (what
    ``with.connection`` may name) are for the people writing definitions: the task
    palette and the editor's help (``dsl.type_help``) show them, the validator ignores them.
    """

    name: str
    with_model: type[BaseModel]
    description: str = ""
    example: Mapping[str, Any] = field(default_factory=dict, compare=False)
    connection_types: tuple[str, ...] = ()

    def validate_with(self, data: Any, *, rendered: bool = False) -> BaseModel:
        """Check ``with``: at save time (templates pass) or after rendering (all values typed).

        Raises pydantic's ``ValidationError``; ``validate.with_errors`` turns it into paths.
        """
        return self.with_model.model_validate(data or {}, context={RENDERED: rendered})

    def with_errors(self, data: Any, *, rendered: bool = False) -> ValidationError | None:
        try:
            self.validate_with(data, rendered=rendered)
        except ValidationError as exc:
            return exc
        return None


class TaskTypeRegistry:
    """Task types by name. Registration is all-or-nothing: a bad batch changes nothing."""

    def __init__(self, task_types: Iterable[TaskType] = ()) -> None:
        self._types: dict[str, TaskType] = {}
        self.register(*task_types)

    def register(self, *task_types: TaskType, replace: bool = False) -> None:
        names = [task_type.name for task_type in task_types]
        for task_type in task_types:
            if not _TYPE_NAME.match(task_type.name):
                raise ValueError(
                    f"invalid task type name {task_type.name!r}: use lowercase letters, digits"
                    " and '_', starting with a letter"
                )
            if not (isinstance(task_type.with_model, type)
                    and issubclass(task_type.with_model, BaseModel)):
                raise TypeError(f"task type {task_type.name!r}: with_model must be a pydantic"
                                " model")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"task type {duplicates[0]!r} appears twice in one registration")
        if not replace:
            taken = [name for name in names if name in self._types]
            if taken:
                raise ValueError(f"task type {taken[0]!r} is already registered")
        for task_type in task_types:
            self._types[task_type.name] = task_type

    def unregister(self, name: str) -> None:
        self._types.pop(name, None)

    def get(self, name: str) -> TaskType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownTaskType(name) from None

    def find(self, name: str) -> TaskType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def copy(self) -> TaskTypeRegistry:
        """An independent registry with the same types (tests register into a copy)."""
        return TaskTypeRegistry(self._types.values())

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[TaskType]:
        return iter(sorted(self._types.values(), key=lambda task_type: task_type.name))

    def __len__(self) -> int:
        return len(self._types)


def _builtin_registry() -> TaskTypeRegistry:
    from capability.dsl.builtin_types import BUILTINS

    return TaskTypeRegistry(TaskType(*builtin) for builtin in BUILTINS)


# The process-wide registry: built-in types now, connector types when their package loads.
registry = _builtin_registry()
# Types that join when the registry is first used (connectors: ``dsl.extensions``).
extensions.run_pending()
