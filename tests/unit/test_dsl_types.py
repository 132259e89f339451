"""Task types: the built-in ``with`` models, templates standing in for typed values, and
the registry."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from capability import dsl


def with_errors(type_name: str, data: dict, *, rendered: bool = False) -> list[tuple[str, str]]:
    error = dsl.registry.get(type_name).with_errors(data, rendered=rendered)
    issues = dsl.pydantic_issues(error, ("with",)) if error else []
    return [(issue["path"], issue["message"]) for issue in issues]


def test_the_built_in_types_are_registered():
    from capability.connectors import registry as connectors

    builtins = {"agent", "approval", "delay", "fail", "http", "noop", "python", "transform",
                "workflow"}
    connectors.install()  # what every application process registers at its start
    assert set(dsl.registry.names()) == builtins | set(connectors.installed())
    assert all(task_type.description for task_type in dsl.registry)


@pytest.mark.parametrize(("type_name", "data"), [
    ("noop", {}),
    ("noop", {"value": {"any": ["structure", 1]}}),
    ("fail", {"message": "boom"}),
    ("delay", {"seconds": 5}),
    ("delay", {"seconds": "2m"}),
    ("http", {"url": "https://x.example/a"}),
    ("http", {"method": "post", "url": "http://x", "headers": {"X-N": 1}, "params": {"q": [1, "a"]},
              "json": {"a": 1}, "timeout": "10s", "expect_status": [200, 201],
              "auth": {"type": "basic", "username": "u", "password": "{{ secrets.pw }}"}}),
    ("http", {"url": "https://x", "data": {"field": "v"}, "expect_status": 204,
              "auth": {"type": "bearer", "token": "{{ secrets.token }}"}}),
    ("transform", {"value": None}),
    ("transform", {"jsonpath": "$.orders[*].id", "input": "{{ tasks.fetch.output.json }}"}),
    ("python", {"callable": "acme.jobs:sync", "kwargs": {"n": 1}}),
    ("python", {"callable": "acme.jobs:Syncer.run"}),
    ("approval", {"message": "Ship it?", "approvers": "release_manager"}),
    ("approval", {"message": "Ship it?"}),
    ("workflow", {"workflow": "child-flow", "params": {"x": 1}}),
])
def test_valid_with(type_name, data):
    assert with_errors(type_name, data) == []


@pytest.mark.parametrize(("type_name", "data", "expected"), [
    ("noop", {"values": 1}, [("with.values", "unknown field")]),
    ("fail", {}, [("with.message", "field required")]),
    ("delay", {"seconds": "soon"}, [("with.seconds", "invalid duration 'soon': use a number"
                                                     " of seconds or a value like 250ms, 30s")]),
    ("delay", {"seconds": -1}, [("with.seconds", "invalid duration -1: a duration cannot be"
                                                 " negative")]),
    ("http", {}, [("with.url", "field required")]),
    ("http", {"url": "https://x", "json": {}, "data": "x"},
     [("with", "use either json or data, not both")]),
    ("http", {"url": "https://x", "data": 5}, [("with.data", "must be text or an object of"
                                                             " form fields")]),
    ("http", {"url": "https://x", "headers": {"X": [1]}}, [("with.headers.X", "must be text")]),
    ("http", {"url": "https://x", "params": {"q": {"a": 1}}},
     [("with.params.q", "must be text, a number, a boolean or a list of them")]),
    ("http", {"url": "https://x", "timeout": 0}, [("with.timeout", "must be greater than 0")]),
    ("http", {"url": "https://x", "expect_status": [200, 700]},
     [("with.expect_status[1]", "must be less than or equal to 599")]),
    ("http", {"url": "https://x", "auth": {"type": "digest"}},
     [("with.auth.type", "must be 'basic' or 'bearer'")]),
    ("http", {"url": "https://x", "auth": {"type": "basic", "username": "u"}},
     [("with.auth", "basic auth needs username and password")]),
    ("http", {"url": "https://x", "auth": {"type": "bearer", "token": "{{ secrets.t }}",
                                           "username": "u"}},
     [("with.auth", "bearer auth takes token, not username or password")]),
    ("http", {"url": "https://x", "auth": {"type": "bearer", "token": "abc123"}},
     [("with.auth.token", 'must come from a secret, e.g. "{{ secrets.api_token }}"')]),
    ("http", {"url": "https://x", "auth": {"type": "basic", "username": "u",
                                           "password": "{{ params.pw }}"}},
     [("with.auth.password", 'must come from a secret, e.g. "{{ secrets.api_token }}"')]),
    ("transform", {}, [("with", "set value, or jsonpath and input")]),
    ("transform", {"value": 1, "jsonpath": "$.a"},
     [("with", "use either value, or jsonpath with input, not both")]),
    ("transform", {"jsonpath": "$.a"}, [("with", "jsonpath needs input: the data to query")]),
    ("transform", {"input": []}, [("with", "input needs jsonpath: the query to run on it")]),
    ("transform", {"jsonpath": "$..[", "input": []}, [("with.jsonpath", "invalid JSONPath: ")]),
    ("python", {"callable": "os.system"},
     [("with.callable", 'must name a function literally, as "package.module:function"')]),
    ("python", {"callable": "{{ params.fn }}"},
     [("with.callable", 'must name a function literally, as "package.module:function"')]),
    ("approval", {"approvers": "ops"}, [("with.message", "field required")]),
    ("workflow", {"workflow": "Child Flow"}, [("with.workflow", "must start with a lowercase"
                                                                " letter and use only lowercase"
                                                                " letters, digits, '-' and '_'"
                                                                " (at most 63 characters)")]),
])
def test_invalid_with(type_name, data, expected):
    found = with_errors(type_name, data)
    assert [p for p, _ in found] == [p for p, _ in expected]
    for (_, message), (_, start) in zip(found, expected, strict=True):
        assert message.startswith(start), message


@pytest.mark.parametrize(("type_name", "data"), [
    ("delay", {"seconds": "{{ params.wait }}"}),
    ("http", {"url": "{{ params.base }}/orders", "method": "{{ params.method }}",
              "timeout": "{{ params.t }}", "expect_status": "{{ params.codes }}",
              "headers": "{{ params.headers }}", "params": {"q": "{{ params.q }}"},
              "auth": "{{ params.auth }}", "data": "{{ params.body }}"}),
    ("http", {"url": "https://x", "expect_status": [200, "{{ params.other }}"]}),
    ("transform", {"jsonpath": "{{ params.path }}", "input": "{{ tasks.a.output }}"}),
    ("python", {"callable": "acme.jobs:sync", "kwargs": "{{ params.kwargs }}"}),
    ("workflow", {"workflow": "{{ params.child }}", "params": "{{ params }}"}),
])
def test_templates_stand_in_for_typed_values_until_rendered(type_name, data):
    assert with_errors(type_name, data) == []


def test_rendered_values_are_checked_strictly():
    delay = dsl.registry.get("delay")
    assert delay.validate_with({"seconds": "90s"}, rendered=True).seconds == 90.0
    assert with_errors("delay", {"seconds": "{{ params.wait }}"}, rendered=True) == [
        ("with.seconds", "invalid duration '{{ params.wait }}': use a number of seconds or a value"
                         " like 250ms, 30s, 5m, 1h")]
    # A rendered password is the secret itself: it no longer has to look like a template.
    http = dsl.registry.get("http").validate_with(
        {"url": "https://x", "method": "patch", "headers": {"N": 5, "B": True},
         "auth": {"type": "bearer", "token": "s3cr3t"}, "expect_status": 201},
        rendered=True)
    assert (http.method, http.headers, http.expect_status) == ("PATCH", {"N": "5", "B": "true"},
                                                              [201])
    assert http.auth.token == "s3cr3t" and http.json_ is None


def test_templated_json_schema_allows_template_strings():
    schema = dsl.definition_json_schema()["$defs"]["DelayWith"]["properties"]["seconds"]
    assert {"type": "string", "pattern": r"\{\{|\{%|\{#",
            "description": "a template, checked when it is rendered"} in schema["anyOf"]


# ---------------------------------------------------------------- registry

class SqlWith(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str
    rows: dsl.Templated[int] = 100


def test_more_types_register_and_validate_like_the_built_ins():
    registry = dsl.registry.copy()
    registry.register(dsl.TaskType("query_x", SqlWith, "runs a query"))
    assert "query_x" in registry and "query_x" not in dsl.registry
    data = {"name": "wf", "tasks": [
        {"id": "q", "type": "query_x", "with": {"query": "select 1",
                                                 "rows": "{{ params.n }}"}}]}
    assert dsl.validate_definition(data, registry).errors == [
        {"path": "tasks[0].with.rows", "message": "unknown parameter 'n' (declared: none)"}]
    data["tasks"][0]["with"] = {"rows": "many"}
    assert [e["path"] for e in dsl.validate_definition(data, registry).errors] == [
        "tasks[0].with.query", "tasks[0].with.rows"]
    assert "query_x" in str(dsl.definition_json_schema(registry)["$defs"]["TaskSpec"]["allOf"])


def test_registration_is_all_or_nothing():
    registry = dsl.registry.copy()
    size = len(registry)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(dsl.TaskType("query_x", SqlWith), dsl.TaskType("http", SqlWith))
    with pytest.raises(ValueError, match="appears twice"):
        registry.register(dsl.TaskType("query_x", SqlWith), dsl.TaskType("query_x", SqlWith))
    with pytest.raises(ValueError, match="invalid task type name"):
        registry.register(dsl.TaskType("query_x", SqlWith), dsl.TaskType("Bad Name", SqlWith))
    with pytest.raises(TypeError, match="pydantic model"):
        registry.register(dsl.TaskType("odd", dict))  # type: ignore[arg-type]
    assert len(registry) == size and "query_x" not in registry
    registry.register(dsl.TaskType("http", SqlWith), replace=True)
    assert registry.get("http").with_model is SqlWith
    registry.unregister("http")
    with pytest.raises(dsl.UnknownTaskType):
        registry.get("http")
    assert registry.find("http") is None


def test_with_errors_are_pydantic_errors_with_paths():
    with pytest.raises(ValidationError):
        dsl.registry.get("fail").validate_with({})
