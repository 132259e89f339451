"""The definition language's semantic rules: ids, dependencies, cycles, types, ``with``,
params and expressions, every problem reported at once with its exact path."""

from __future__ import annotations

import copy

from capability import dsl
from tests.support.dsl import errors_of, example, noop, tasks


def test_duplicate_ids_point_at_the_duplicate():
    assert errors_of(tasks(noop("a"), noop("b"), noop("a"), noop("a"))) == [
        ("tasks[2].id", "duplicate task id 'a' (also used by tasks[0])"),
        ("tasks[3].id", "duplicate task id 'a' (also used by tasks[0])"),
    ]


def test_dependency_errors_name_the_entry():
    found = errors_of(tasks(
        noop("a"), noop("b"), noop("c", depends_on=["x", "c", "a", "a"])))
    assert found == [
        ("tasks[2].depends_on[0]", "unknown task 'x'"),
        ("tasks[2].depends_on[1]", "a task cannot depend on itself"),
        ("tasks[2].depends_on[3]", "'a' is listed twice"),
    ]


def test_cycles_are_named():
    assert errors_of(tasks(noop("a", depends_on=["b"]), noop("b", depends_on=["a"]))) == [
        ("tasks[0].depends_on", "dependency cycle: a -> b -> a")]
    found = errors_of(tasks(
        noop("start"),
        noop("x", depends_on=["start", "z"]),
        noop("y", depends_on=["x"]),
        noop("z", depends_on=["y"]),
        noop("p", depends_on=["q"]),
        noop("q", depends_on=["p"]),
    ))
    assert found == [
        ("tasks[1].depends_on", "dependency cycle: x -> z -> y -> x"),
        ("tasks[4].depends_on", "dependency cycle: p -> q -> p"),
    ]


def test_a_long_chain_is_fine_and_a_long_cycle_is_found():
    chain = [noop("t0")] + [noop(f"t{i}", depends_on=[f"t{i - 1}"]) for i in range(1, 1000)]
    assert dsl.validate_definition(tasks(*chain)).valid
    chain[0] = noop("t0", depends_on=["t999"])
    (path, message), = errors_of(tasks(*chain))
    assert path == "tasks[0].depends_on"
    assert message.startswith("dependency cycle: t0 -> t999 -> t998") and message.endswith("t0")


def test_unknown_types_list_the_known_ones():
    known = ", ".join(dsl.registry.names())
    assert errors_of(tasks({"id": "a", "type": "htp"})) == [
        ("tasks[0].type", f"unknown task type 'htp' (did you mean 'http'?); known types: {known}")]
    assert errors_of(tasks(noop("a", compensate={"type": "undo_it_all"}))) == [
        ("tasks[0].compensate.type", f"unknown task type 'undo_it_all'; known types: {known}")]


def test_with_is_checked_against_its_type():
    found = errors_of(tasks(
        {"id": "a", "type": "http", "with": {"url": "ftp://x", "method": "FETCH", "retries": 2}},
        {"id": "b", "type": "delay"},
        noop("c", compensate={"type": "http", "with": {"url": 5}}),
    ))
    assert found == [
        ("tasks[0].with.method",
         "must be 'GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD' or 'OPTIONS'"),
        ("tasks[0].with.url", "must be an http:// or https:// URL"),
        ("tasks[0].with.retries", "unknown field"),
        ("tasks[1].with.seconds", "field required"),
        ("tasks[2].compensate.with.url", "must be text"),
    ]


def test_param_declarations_are_checked():
    data = tasks(noop("a"))
    data["params"] = {
        "Since": {"type": "string"},
        "limit": {"type": "integer", "default": "ten"},
        "mode": {"type": "string", "enum": ["fast", 3], "default": "slow"},
        "flag": {"type": "boolean", "required": True, "default": True},
        "n": {"type": "float"},
        "ok": {"type": "number", "default": 1.5, "enum": [1.5, 2]},
    }
    assert errors_of(data) == [
        ("params.Since", "parameter names must use only lowercase letters, digits and '_',"
                         " and not start with a digit"),
        ("params.flag.default",
         "a required parameter takes no default: remove default or required"),
        ("params.limit.default", "must be a whole number (the parameter's type is integer)"),
        ("params.mode.default", "must be one of 'fast', 3"),
        ("params.mode.enum[1]", "must be text (the parameter's type is string)"),
        ("params.n.type", "must be 'string', 'integer', 'number', 'boolean', 'object' or 'array'"),
    ]


def test_expressions_are_checked_where_they_are_written():
    data = tasks(
        noop("a", when="{{ params.x == }}"),
        {"id": "b", "type": "http", "depends_on": ["a"],
         "with": {"url": "https://x/{{ tasks.nope.output }}", "headers": {"X": "{{ foo }}"}}},
        noop("c", **{"with": {"value": ["{{ item }}", "{{ params.missing }}"]}}),
        noop("d", for_each="{{ tasks.a.output }}", compensate={
            "type": "noop", "with": {"value": "{{ item.id }} {{ index }} {% if %}"}}),
    )
    data["params"] = {"x": {"type": "integer"}}
    assert errors_of(data) == [
        ("tasks[0].when", "invalid expression: unexpected 'end of print statement'"),
        ("tasks[1].with.url", "unknown task 'nope'"),
        ("tasks[1].with.headers.X",
         "unknown name 'foo'; expressions can use params, tasks, run, secrets, trigger"),
        ("tasks[2].with.value[0]", "'item' is only available in a task with for_each"),
        ("tasks[2].with.value[1]", "unknown parameter 'missing' (declared: x)"),
        ("tasks[3].compensate.with.value",
         "invalid expression: Expected an expression, got 'end of statement block'"),
    ]


def test_expressions_may_read_any_task_and_dict_methods():
    data = tasks(
        noop("a", **{"with": {"value": "{{ tasks.b.status }} {{ params.get('x') }}"}}),
        noop("b", **{"with": {"value": "{{ tasks['a'].output }} {{ run.id }} {{ secrets.k }}"}}),
        noop("c", for_each=[1, 2], **{"with": {"value": "{{ item }}{{ index }}"}}),
    )
    assert errors_of(data) == []


def test_item_is_not_in_scope_of_for_each_or_when():
    found = errors_of(tasks(noop("a", for_each="{{ item }}", when="{{ index }}")))
    assert found == [
        ("tasks[0].when", "'index' is only available in a task with for_each"),
        ("tasks[0].for_each", "'item' is only available in a task with for_each"),
    ]


def test_max_parallel_needs_for_each():
    assert errors_of(tasks(noop("a", max_parallel=2))) == [
        ("tasks[0].max_parallel", "only applies to a task with for_each")]


def test_every_error_is_reported_at_once_in_document_order():
    data = example()
    data["name"] = "Order Sync"                                   # shape
    data["tasks"][1]["depends_on"] = ["fetch", "ghost"]          # unknown dependency
    data["tasks"][2]["type"] = "nop"                             # unknown type
    data["tasks"][0]["with"]["url"] = "shop.example/orders"      # with schema
    result = dsl.validate_definition(data)
    assert not result.valid and result.definition is None
    assert [(e["path"], e["message"]) for e in result.errors] == [
        ("name", "must start with a lowercase letter and use only lowercase letters, digits,"
                 " '-' and '_' (at most 63 characters)"),
        ("tasks[0].with.url", "must be an http:// or https:// URL"),
        ("tasks[1].depends_on[1]", "unknown task 'ghost'"),
        ("tasks[2].type", "unknown task type 'nop' (did you mean 'noop'?); known types: "
                          + ", ".join(dsl.registry.names())),
    ]
    assert dsl.validate_definition(copy.deepcopy(data)).errors == result.errors


def test_a_task_with_a_shape_error_still_has_its_other_fields_checked():
    found = errors_of(tasks(
        {"id": "a", "type": "http", "trigger_rule": "never", "with": {"url": "x"},
         "depends_on": ["ghost"]}))
    assert [p for p, _ in found] == [
        "tasks[0].with.url", "tasks[0].depends_on[0]", "tasks[0].trigger_rule"]


def test_result_as_a_response_body():
    assert dsl.validate_definition(tasks(noop("a"))).to_dict() == {"valid": True, "errors": []}
    body = dsl.validate_definition({"tasks": []}).to_dict()
    assert body["valid"] is False and {e["path"] for e in body["errors"]} == {"name", "tasks"}
