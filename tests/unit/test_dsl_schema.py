"""The published JSON Schema of the definition language."""

from __future__ import annotations

import json

from capability import dsl
from tests.support.dsl import example, noop, tasks


def _property_names(node, found=None) -> set[str]:
    found = set() if found is None else found
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                found.update(value)
            _property_names(value, found)
    elif isinstance(node, list):
        for item in node:
            _property_names(item, found)
    return found


def test_the_schema_is_json_and_names_every_field_of_the_language():
    schema = dsl.definition_json_schema()
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$id"] == dsl.SCHEMA_ID and schema["title"] == "Workflow definition"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    names = _property_names(schema)
    language = {
        "name", "description", "params", "defaults", "max_active_runs", "tasks",  # workflow
        "type", "default", "required", "enum",  # params
        "retry", "timeout", "queue",  # defaults
        "id", "with", "depends_on", "trigger_rule", "when", "for_each", "max_parallel",
        "compensate", "max_attempts", "backoff", "delay", "max_delay", "jitter",  # tasks
        "value", "message", "seconds", "method", "url", "headers", "json", "data",
        "expect_status", "auth", "jsonpath", "input", "callable", "kwargs", "approvers",
        "workflow",  # built-in types' with
    }
    assert language <= names, language - names
    assert schema["additionalProperties"] is False
    task = schema["$defs"]["TaskSpec"]
    assert {rule["if"]["properties"]["type"]["const"] for rule in task["allOf"]} == set(
        dsl.registry.names())


def test_the_schema_accepts_the_example_and_rejects_what_validation_rejects():
    import jsonschema
    validator = jsonschema.Draft202012Validator(dsl.definition_json_schema())
    validator.check_schema(validator.schema)
    assert list(validator.iter_errors(example())) == []
    templated = tasks({"id": "w", "type": "delay", "with": {"seconds": "{{ params.wait }}"}})
    assert list(validator.iter_errors(templated)) == []
    for bad in (
        {**example(), "owner": "me"},
        tasks({"id": "a", "type": "http", "with": {"url": "https://x", "retries": 1}}),
        tasks({"id": "a", "type": "delay", "with": {"seconds": "soon"}}),
        tasks(noop("A")),
    ):
        assert list(validator.iter_errors(bad)), bad
        assert not dsl.validate_definition(bad).valid
