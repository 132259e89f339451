"""The help of task types (``dsl.type_help``): what the task palette and the editor's help
panel show, made from each type's registration; and every type's example, which must
validate so that none can be wrong."""

from __future__ import annotations

from typing import Any, Literal

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from capability import dsl
from capability.connectors import registry as connectors
from capability.dsl import type_help as task_help
from capability.dsl.expressions import find_expressions, referenced_keys

# Every type the application registers, the connectors' too (they join at its start).
connectors.install()
BUILT_IN = ["agent", "approval", "delay", "fail", "http", "noop", "python", "transform", "workflow"]
CONNECTORS = ["amqp", "email", "jsonpath", "llm", "mqtt", "nats", "redis", "s3", "slack",
              "sql", "teams", "validate", "webhook"]


def _example_workflow(task_type: dsl.TaskType) -> dict[str, Any]:
    """The example task in a workflow with what it reads: a noop task for each task it
    depends on, a declared text parameter for each parameter it reads."""
    task = task_help.example_task(task_type)
    assert task is not None, f"task type {task_type.name!r} declares no example"
    texts = [text for _, text in find_expressions(task["with"], "with")]
    params = sorted({key for text in texts for key in referenced_keys(text, "params")})
    upstream = [{"id": name, "type": "noop"} for name in task.get("depends_on", [])]
    return {"name": f"example-{task_type.name}".replace("_", "-"),
            "params": {name: {"type": "string"} for name in params},
            "tasks": [*upstream, task]}


def test_the_registry_holds_the_built_in_types_and_connectors():
    assert set(BUILT_IN + CONNECTORS) <= set(dsl.registry.names())


@pytest.mark.parametrize("name", dsl.registry.names())
def test_every_example_of_every_type_validates(name):
    definition = _example_workflow(dsl.registry.get(name))
    result = dsl.validate_definition(definition)
    assert result.errors == [], (name, result.errors)
    schema = dsl.definition_json_schema()
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(definition)]
    assert errors == [], (name, errors)


@pytest.mark.parametrize("name", dsl.registry.names())
def test_the_help_shows_the_example_as_yaml_and_every_field_described(name):
    task_type = dsl.registry.get(name)
    shown = task_help.task_type_help(task_type)
    assert shown["name"] == name and shown["description"] == task_type.description
    assert yaml.safe_load(shown["example"]) == [task_help.example_task(task_type)]
    top = [f["name"] for f in shown["fields"] if "." not in f["name"]]
    assert top == list(task_type.with_model.model_json_schema(by_alias=True)["properties"])
    undescribed = [f["name"] for f in shown["fields"] if not f["description"]]
    assert undescribed == [], f"{name}: fields without a description in the model"
    assert shown["connection_types"] == list(task_type.connection_types)


def test_a_connector_says_the_connection_types_it_takes():
    assert task_help.task_type_help(dsl.registry.get("sql"))["connection_types"] == [
        "postgres", "mysql", "sqlite"]
    assert task_help.task_type_help(dsl.registry.get("noop"))["connection_types"] == []


def test_an_example_depends_on_the_tasks_its_templates_read():
    task = task_help.example_task(dsl.registry.get("transform"))
    assert task == {"id": "my_transform", "type": "transform", "depends_on": ["fetch"],
                    "with": {"jsonpath": "$.items[*].id",
                             "input": "{{ tasks.fetch.output.json }}"}}


def _row(name: str, field: str) -> dict[str, Any]:
    rows = task_help.task_type_help(dsl.registry.get(name))["fields"]
    return next(row for row in rows if row["name"] == field)


@pytest.mark.parametrize(("name", "field", "kind", "required", "default", "templated"), [
    ("delay", "seconds", "duration (seconds, or 30s, 5m, 1h)", True, None, True),
    ("sql", "max_rows", "integer, 1 to 100000", False, "1000", True),
    ("sql", "fetch", "text", False, '"all"', False),
    ("sql", "query", "text", True, None, False),
    ("http", "headers", "object: name \u2192 text", False, None, True),
    ("http", "expect_status", "integer or list of integers", False, None, True),
    ("http", "auth", "object", False, None, True),
    ("http", "auth.type", "text", True, None, False),
    ("email", "to", "list of text", True, None, True),
    ("email", "attachments[].content_type", "text", False, '"application/octet-stream"', False),
    ("llm", "temperature", "number, 0 to 2", False, None, True),
    ("noop", "value", "any", False, None, False),
])
def test_a_field_row_says_its_type_requirement_default_and_templating(
        name, field, kind, required, default, templated):
    row = _row(name, field)
    assert (row["type"], row["required"], row["default"], row["templated"]) == (
        kind, required, default, templated)


def test_a_field_row_lists_allowed_values_and_pattern_rules():
    assert _row("sql", "fetch")["choices"] == ["all", "one", "none"]
    assert _row("http", "auth.type")["choices"] == ["basic", "bearer"]
    assert _row("python", "callable")["rules"] == [
        'must name a function literally, as "package.module:function"']
    assert _row("sql", "query")["choices"] == [] and _row("sql", "query")["rules"] == []


class _Target(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["a", "b"] = Field(description="which one")
    level: int = Field(default=3, ge=1, le=5, description="how loud")


class _ShoutWith(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connection: str = Field(description="a megaphone connection")
    text: dsl.Templated[str] = Field(description="what to shout")
    targets: list[_Target] = Field(default_factory=list, description="who hears it")


def test_a_type_of_another_package_gets_the_same_help():
    registry = dsl.registry.copy()
    registry.register(dsl.TaskType("shout", _ShoutWith, "Shouts text.",
                                   example={"connection": "mega", "text": "{{ run.id }}"},
                                   connection_types=("megaphone",)))
    shown = next(t for t in task_help.palette(registry) if t["name"] == "shout")
    assert [f["name"] for f in shown["fields"]] == [
        "connection", "text", "targets", "targets[].kind", "targets[].level"]
    assert shown["connection_types"] == ["megaphone"]
    assert shown["example"] == ("- id: my_shout\n  type: shout\n  with:\n    connection: mega\n"
                                "    text: '{{ run.id }}'\n")
    level = shown["fields"][-1]
    assert (level["type"], level["default"], level["description"]) == (
        "integer, 1 to 5", "3", "how loud")


def test_a_type_without_example_shows_none():
    registry = dsl.TaskTypeRegistry([dsl.TaskType("bare", _ShoutWith)])
    assert task_help.palette(registry)[0]["example"] == ""
