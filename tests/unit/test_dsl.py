"""The definition language: parsing, validation with exact paths, params, JSON Schema."""

from __future__ import annotations

import json

import pytest

from capability import dsl
from tests.support.dsl import EXAMPLE, errors_of, example, noop, tasks

# ---------------------------------------------------------------- the example

def test_the_dsl_example_validates_and_keeps_its_meaning():
    result = dsl.validate_source(EXAMPLE)
    assert result.valid and result.errors == []
    definition = result.definition
    assert definition is not None
    assert definition.name == "order-sync"
    assert definition.params["since"].default == "1970-01-01"  # a string, not a YAML date
    assert definition.params["dry_run"].required is True
    assert definition.max_active_runs == 5
    fetch, push, notify = definition.tasks
    assert fetch.with_ == {
        "method": "GET", "url": "https://shop.example/api/orders?since={{ params.since }}"}
    assert (fetch.retry.max_attempts, fetch.retry.delay, fetch.retry.max_delay) == (5, 1.0, 60.0)
    assert fetch.timeout == 20.0 and push.timeout is None
    assert push.max_parallel == 4 and push.compensate.type == "http"
    assert notify.trigger_rule == dsl.TriggerRule.ALL_DONE and fetch.trigger_rule == "all_success"


def test_defaults_apply_to_tasks_that_do_not_set_their_own():
    definition = dsl.validate_source(EXAMPLE).definition
    fetch, push, _ = definition.tasks
    assert dsl.effective_retry(fetch, definition.defaults).max_attempts == 5
    assert dsl.effective_retry(push, definition.defaults).max_attempts == 3
    assert dsl.effective_retry(push, dsl.DefaultsSpec()) == dsl.RetrySpec()
    assert dsl.effective_timeout(fetch, definition.defaults) == 20.0
    assert dsl.effective_timeout(push, definition.defaults) == 30.0
    assert dsl.effective_timeout(push, dsl.DefaultsSpec()) is None
    assert dsl.effective_queue(push, definition.defaults) == "default"
    assert dsl.effective_queue(push, dsl.DefaultsSpec(queue="low")) == "low"
    assert dsl.effective_queue(push, dsl.DefaultsSpec()) == dsl.DEFAULT_QUEUE


def test_retry_defaults_and_waits():
    retry = dsl.RetrySpec()
    assert (retry.max_attempts, retry.backoff, retry.delay, retry.max_delay, retry.jitter) == (
        1, "exponential", 1.0, 300.0, True)
    steady = dsl.RetrySpec(max_attempts=9, delay="2s", max_delay="10s", jitter=False)
    assert [steady.wait_seconds(n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]
    fixed = dsl.RetrySpec(backoff="fixed", delay="3s", jitter=False)
    assert fixed.wait_seconds(4) == 3
    assert dsl.RetrySpec(delay=4).wait_seconds(1, rand=lambda: 0.0) == 2.0


def test_the_same_definition_in_json_validates():
    text = json.dumps(example())
    assert dsl.validate_source(text).valid
    assert dsl.validate_source(text, "json").valid
    assert dsl.validate_source(EXAMPLE, "yaml").valid


def test_topological_order_and_upstreams():
    definition = dsl.validate_definition(tasks(
        noop("c", depends_on=["b"]), noop("a"), noop("b", depends_on=["a"]), noop("d"),
    )).definition
    assert dsl.topological_order(definition) == ["a", "b", "c", "d"]
    assert dsl.upstream_map(definition)["c"] == ["b"]


# ---------------------------------------------------------------- source text

@pytest.mark.parametrize(("text", "fmt", "message"), [
    ("name: [x", None, "invalid YAML at line 1, column 9: expected ',' or ']'"),
    ('{"name": "x"', "json", "invalid JSON at line 1, column 13: Expecting ',' delimiter"),
    ("name: a\nname: b\n", None, "invalid YAML at line 2, column 1: duplicate key 'name'"),
    ('{"name": "a", "name": "b"}', "json", "invalid JSON: duplicate key 'name'"),
    ("   \n", None, "the definition is empty"),
    ("x: 1", "toml", "unknown format 'toml'"),
    ("a: &a [*a]", None, "recursive"),
])
def test_syntax_errors_are_one_issue_at_the_root(text, fmt, message):
    data, errors = dsl.parse_source(text, fmt)
    assert data is None and len(errors) == 1
    assert errors[0]["path"] == "$" and message in errors[0]["message"]
    with pytest.raises(dsl.SourceError):
        dsl.load_source(text, fmt)
    assert dsl.validate_source(text, fmt).errors == errors


def test_source_detection_keeps_text_as_written():
    assert dsl.parse_source('{"a": 1}') == ({"a": 1}, [])
    assert dsl.parse_source("{a: 1}") == ({"a": 1}, [])  # YAML flow style
    assert dsl.parse_source(b"since: 2024-01-01\n") == ({"since": "2024-01-01"}, [])
    merged, _ = dsl.parse_source("base: &b {x: 1, y: 2}\nuse: {<<: *b, y: 3}\n")
    assert merged["use"] == {"x": 1, "y": 3}


def test_alias_bombs_and_deep_nesting_are_refused():
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n"
        for i in range(6))
    _, errors = dsl.parse_source(bomb)
    assert "too large" in errors[0]["message"]
    _, errors = dsl.parse_source("[" * 100 + "]" * 100, "json")
    assert "nested too deeply" in errors[0]["message"]


def test_a_definition_must_be_an_object():
    assert errors_of(["name"]) == [
        ("$", "a workflow definition must be an object with name and tasks")]


# ---------------------------------------------------------------- shape errors

def test_unknown_fields_are_errors_with_their_path():
    data = example()
    data["owner"] = "me"
    data["tasks"][0]["retry"]["tries"] = 2
    data["tasks"][1]["compensate"]["when"] = "x"
    data["params"]["limit"]["min"] = 1
    assert errors_of(data) == [
        ("params.limit.min", "unknown field"),
        ("tasks[0].retry.tries", "unknown field"),
        ("tasks[1].compensate.when", "unknown field"),
        ("owner", "unknown field"),
    ]


@pytest.mark.parametrize(("change", "path", "message"), [
    ({"name": "Order Sync"}, "name",
     "must start with a lowercase letter and use only lowercase letters, digits, '-' and '_'"
     " (at most 63 characters)"),
    ({"name": "a" * 64}, "name", "must start with a lowercase letter"),
    ({"tasks": []}, "tasks", "must have at least 1 item"),
    ({"max_active_runs": 0}, "max_active_runs", "must be greater than or equal to 1"),
    ({"defaults": {"queue": "High"}}, "defaults.queue", "must start with a lowercase letter"),
    ({"defaults": {"timeout": "soon"}}, "defaults.timeout", "invalid duration 'soon'"),
    ({"defaults": {"retry": 3}}, "defaults.retry", "must be an object"),
])
def test_top_level_shape_errors(change, path, message):
    data = {**example(), **change}
    found = errors_of(data)
    assert [p for p, _ in found] == [path]
    assert found[0][1].startswith(message)


def test_name_is_required_and_so_are_tasks():
    assert errors_of({}) == [("name", "field required"), ("tasks", "field required")]


def test_at_most_a_thousand_tasks():
    many = tasks(*(noop(f"t{i}") for i in range(1001)))
    assert errors_of(many) == [("tasks", "must have at most 1000 items")]
    assert dsl.validate_definition(tasks(*(noop(f"t{i}") for i in range(1000)))).valid


@pytest.mark.parametrize(("task", "path", "message"), [
    ({"id": "Fetch", "type": "noop"}, "tasks[0].id",
     "must start with a lowercase letter and use only lowercase letters, digits and '_'"
     " (at most 63 characters)"),
    ({"id": "a-b", "type": "noop"}, "tasks[0].id", "must start with a lowercase letter"),
    ({"type": "noop"}, "tasks[0].id", "field required"),
    ({"id": "a"}, "tasks[0].type", "field required"),
    (noop("a", trigger_rule="sometimes"), "tasks[0].trigger_rule",
     "must be 'all_success', 'all_done', 'one_success', 'one_failed', 'all_failed' or"
     " 'none_failed'"),
    (noop("a", when="true"), "tasks[0].when",
     'must be an expression in {{ }}, e.g. "{{ params.enabled }}"'),
    (noop("a", when=False), "tasks[0].when", "must be an expression"),
    (noop("a", for_each="abc"), "tasks[0].for_each", "must be a list or an expression"),
    (noop("a", for_each=[1], max_parallel=0), "tasks[0].max_parallel",
     "must be greater than or equal to 1"),
    (noop("a", retry={"max_attempts": 0}), "tasks[0].retry.max_attempts",
     "must be greater than or equal to 1"),
    (noop("a", retry={"backoff": "linear"}), "tasks[0].retry.backoff",
     "must be 'fixed' or 'exponential'"),
    (noop("a", retry={"delay": "1m", "max_delay": "10s"}), "tasks[0].retry",
     "max_delay must not be shorter than delay"),
    (noop("a", retry={"jitter": "sometimes"}), "tasks[0].retry.jitter", "must be true or false"),
    (noop("a", timeout="1 week"), "tasks[0].timeout",
     "invalid duration '1 week': use a number of seconds or a value like 250ms, 30s, 5m, 1h"),
    (noop("a", timeout=0), "tasks[0].timeout", "must be greater than 0"),
    (noop("a", queue="Fast Lane"), "tasks[0].queue", "must start with a lowercase letter"),
    (noop("a", depends_on="b"), "tasks[0].depends_on", "must be a list"),
    (noop("a", compensate={"with": {}}), "tasks[0].compensate.type", "field required"),
    ({"id": "a", "type": "noop", "with": "x"}, "tasks[0].with", "must be an object"),
])
def test_task_shape_errors(task, path, message):
    found = errors_of(tasks(task))
    assert [p for p, _ in found] == [path], found
    assert found[0][1].startswith(message)


def test_durations_and_plain_seconds_are_accepted_everywhere():
    definition = dsl.validate_definition(tasks(noop(
        "a", timeout="1h", retry={"delay": 0.5, "max_delay": "2m"}))).definition
    task = definition.tasks[0]
    assert (task.timeout, task.retry.delay, task.retry.max_delay) == (3600.0, 0.5, 120.0)


def test_definition_round_trips_with_its_own_field_names():
    definition = dsl.validate_source(EXAMPLE).definition
    data = definition.to_data()
    assert data["tasks"][1]["with"]["json"] == "{{ item }}"
    assert "with_" not in json.dumps(data)
    assert dsl.validate_definition(data).valid


# ---------------------------------------------------------------- run params

def test_params_get_defaults_and_checks():
    definition = dsl.validate_source(EXAMPLE).definition
    resolved, errors = dsl.validate_params(definition, {"dry_run": True})
    assert errors == []
    assert resolved == {"since": "1970-01-01", "limit": 100, "dry_run": True}
    resolved, errors = dsl.validate_params(definition, {"dry_run": False, "limit": 5.0})
    assert errors == [] and resolved["limit"] == 5 and isinstance(resolved["limit"], int)


def test_param_errors_name_the_parameter():
    definition = dsl.validate_source(EXAMPLE).definition
    _, errors = dsl.validate_params(definition, {"limit": "ten", "since": 3, "extra": 1})
    assert errors == [
        {"path": "params.since", "message": "must be text (the parameter's type is string)"},
        {"path": "params.limit",
         "message": "must be a whole number (the parameter's type is integer)"},
        {"path": "params.dry_run", "message": "parameter required"},
        {"path": "params.extra",
         "message": "unknown parameter (this workflow takes since, limit, dry_run)"},
    ]
    _, errors = dsl.validate_params(definition, ["x"])  # type: ignore[arg-type]
    assert errors == [{"path": "params", "message": "must be an object of parameter values"}]


def test_param_types_and_enums():
    spec = dsl.ParamSpec
    assert dsl.check_param_value(spec(type="integer"), True) is not None
    assert dsl.check_param_value(spec(type="number"), 2) is None
    assert dsl.check_param_value(spec(type="number"), float("nan")) is not None
    assert dsl.check_param_value(spec(type="object"), {}) is None
    assert dsl.check_param_value(spec(type="array"), {}) == (
        "must be a list (the parameter's type is array)")
    assert dsl.check_param_value(spec(type="string", enum=["a"]), "b") == "must be one of 'a'"
    definition = dsl.validate_definition({**tasks(noop("a")), "params": {
        "opt": {"type": "object"}, "tags": {"type": "array", "default": ["x"]}}}).definition
    resolved, errors = dsl.validate_params(definition, None)
    assert errors == [] and resolved == {"opt": None, "tags": ["x"]}
    resolved["tags"].append("y")
    assert definition.params["tags"].default == ["x"]  # defaults are copied, not shared
    bare = dsl.validate_definition(tasks(noop("a"))).definition
    _, errors = dsl.validate_params(bare, {"a": 1})
    assert errors == [
        {"path": "params.a", "message": "unknown parameter (this workflow takes none)"}]


def test_the_package_exports_what_it_declares():
    """``capability.dsl`` loads its names on first use: the names type checkers see (its
    TYPE_CHECKING imports), the names it loads (``_EXPORTS``) and ``__all__`` agree, and
    each is its submodule's own object."""
    import ast
    import importlib
    from pathlib import Path

    tree = ast.parse(Path(dsl.__file__).read_text())
    checked = {
        alias.name: node.module.rsplit(".", 1)[-1]
        for guard in tree.body if isinstance(guard, ast.If)
        for node in guard.body if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    assert checked == dsl._EXPORTS
    assert sorted(dsl.__all__) == sorted(dsl._EXPORTS)
    for name, module in dsl._EXPORTS.items():
        assert getattr(dsl, name) is getattr(
            importlib.import_module(f"capability.dsl.{module}"), name), name
    with pytest.raises(AttributeError):
        dsl.no_such_name  # noqa: B018
