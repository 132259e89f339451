"""``validate`` (JSON Schema, every violation with its path) and ``jsonpath``."""

from __future__ import annotations

from typing import Any

import pytest

from capability import dsl
from capability.connectors import registry
from capability.engine.executors import EXECUTORS
from capability.engine.settings import EngineSettings
from capability.engine.state import AttemptContext

SCHEMA = {"type": "object", "required": ["id", "tags"],
          "properties": {"id": {"type": "integer"},
                         "tags": {"type": "array", "items": {"type": "string"}}}}


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    registry.install()


def _run(task_type: str, with_: dict[str, Any]) -> Any:
    definition = dsl.validate_definition({"name": "w", "tasks": [
        {"id": "a", "type": task_type, "with": with_}]})
    assert definition.definition is not None, definition.errors
    ctx = AttemptContext(attempt_id="a1", number=1, run_id="r1",
                         task=definition.definition.tasks[0], definition=definition.definition)
    return EXECUTORS[task_type](with_, ctx, EngineSettings())


def test_validate_passes_the_value_through() -> None:
    value = {"id": 7, "tags": ["a"]}
    out = _run("validate", {"value": value, "schema": SCHEMA})
    assert (out.ok, out.output) == (True, value)


def test_validate_lists_every_violation_with_its_path_and_is_not_retried() -> None:
    out = _run("validate", {"value": {"id": "seven", "tags": ["a", 2]}, "schema": SCHEMA})
    assert not out.ok and not out.retriable
    assert "2 violations" in out.error
    assert "$.id: 'seven' is not of type 'integer'" in out.error
    assert "$.tags[1]: 2 is not of type 'string'" in out.error


def test_a_bad_schema_is_refused_when_the_definition_is_saved() -> None:
    result = dsl.validate_definition({"name": "w", "tasks": [
        {"id": "a", "type": "validate", "with": {"value": 1, "schema": {"type": 12}}}]})
    [error] = result.errors
    assert error["path"] == "tasks[0].with.schema"
    assert "not a valid JSON Schema" in error["message"]
    templated = dsl.validate_definition({"name": "w", "params": {"s": {"type": "object"}},
                                         "tasks": [{"id": "a", "type": "validate", "with": {
                                             "value": 1, "schema": "{{ params.s }}"}}]})
    assert templated.errors == []


@pytest.mark.parametrize(("with_", "output"), [
    ({"input": {"items": [{"id": 1}, {"id": 2}]}, "path": "$.items[*].id"}, [1, 2]),
    ({"input": {"items": [{"id": 1}, {"id": 2}]}, "path": "$.items[*].id", "first": True}, 1),
    ({"input": {"items": []}, "path": "$.items[*].id", "first": True}, None),
    ({"input": {"a": [{"b": 5}, {"b": 9}]}, "path": "$.a[?b > 6].b"}, [9]),
])
def test_jsonpath(with_: dict[str, Any], output: Any) -> None:
    out = _run("jsonpath", with_)
    assert (out.ok, out.output) == (True, output)


def test_a_bad_jsonpath_is_refused_when_saved() -> None:
    result = dsl.validate_definition({"name": "w", "tasks": [
        {"id": "a", "type": "jsonpath", "with": {"input": [], "path": "$.["}}]})
    assert [e["path"] for e in result.errors] == ["tasks[0].with.path"]
