"""A task type joins in one all-or-nothing call: its ``with`` model in the DSL's registry
and its executor in the engine, both or neither."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel, ConfigDict

from capability import dsl
from capability.engine.executors import EXECUTORS, register_task_type
from capability.engine.state import Outcome


class ShoutWith(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


def shout(params, ctx, settings) -> Outcome:
    return Outcome.success(str(params["text"]).upper())


@pytest.fixture()
def cleanup() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        dsl.registry.unregister(name)
        EXECUTORS.pop(name, None)


def test_a_type_is_registered_with_its_executor(cleanup):
    cleanup.append("shout")
    register_task_type(dsl.TaskType("shout", ShoutWith, "Upper-cases text."), shout)
    assert EXECUTORS["shout"] is shout and "shout" in dsl.registry
    result = dsl.validate_definition({"name": "s", "tasks": [
        {"id": "a", "type": "shout", "with": {"text": "hi", "colour": "red"}}]})
    assert ("tasks[0].with.colour", "unknown field") in [
        (e["path"], e["message"]) for e in result.errors]


@pytest.mark.parametrize(("name", "executor"), [
    ("Bad-Name", shout),  # the registry refuses the name
    ("fine_name", "not callable"),  # the executor is not a function
    ("noop", shout),  # taken, without replace
])
def test_a_refused_registration_changes_nothing(cleanup, name, executor):
    before_types, before_executors = dsl.registry.names(), dict(EXECUTORS)
    with pytest.raises((ValueError, TypeError)):
        register_task_type(dsl.TaskType(name, ShoutWith), executor)
    assert dsl.registry.names() == before_types and EXECUTORS == before_executors
