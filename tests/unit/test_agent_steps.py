"""The ``agent`` task type's definition rules and the check of an agent's output
(``dsl.agent_steps``): every violation of the schema and of the checks, with paths."""

from __future__ import annotations

from typing import Any

import pytest

from capability import dsl
from capability.dsl.agent_steps import output_errors

SCHEMA = {"type": "object", "required": ["category", "confidence"],
          "properties": {"category": {"enum": ["bug", "question"]},
                         "confidence": {"type": "number"},
                         "items": {"type": "array", "items": {"type": "object", "properties": {
                             "sku": {"type": "string"}, "qty": {"type": "integer"}}}}}}


def _workflow(with_: dict[str, Any], **task: Any) -> dict[str, Any]:
    return {"name": "agent-rules", "tasks": [{"id": "ask", "type": "agent", "with": with_,
                                              **task}]}


def _errors(definition: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["path"], e["message"]) for e in dsl.validate_definition(definition).errors]


def test_a_full_agent_step_validates():
    assert _errors(_workflow({
        "instructions": "Classify {{ params.x }}", "inputs": {"x": "{{ params.x }}"},
        "output_schema": SCHEMA, "model_hint": "reasoning",
        "checks": [{"jsonpath": "$.confidence", "min": 0, "max": 1},
                   {"jsonpath": "$.category", "matches": "^b"},
                   {"jsonpath": "$.items[*].qty", "min": "{{ params.low }}"}]},
    ) | {"params": {"x": {"type": "string"}, "low": {"type": "integer"}}}) == []


@pytest.mark.parametrize(("with_", "expected"), [
    ({"output_schema": {}}, [("tasks[0].with.instructions", "field required")]),
    ({"instructions": "x"}, [("tasks[0].with.output_schema", "field required")]),
    ({"instructions": "x", "output_schema": {"type": "thing"}},
     [("tasks[0].with.output_schema", "not a valid JSON Schema at type: 'thing' is not "
                                      "valid under any of the given schemas")]),
    ({"instructions": "x", "output_schema": {}, "model_hint": "huge"},
     [("tasks[0].with.model_hint", "must be 'fast', 'balanced' or 'reasoning'")]),
    ({"instructions": "x", "output_schema": {}, "checks": [{"jsonpath": "$.a"}]},
     [("tasks[0].with.checks[0]", "a check needs equals, matches, min or max")]),
    ({"instructions": "x", "output_schema": {}, "checks": [{"jsonpath": "$[", "equals": 1}]},
     [("tasks[0].with.checks[0].jsonpath", None)]),
    ({"instructions": "x", "output_schema": {}, "checks": [{"jsonpath": "$.a",
                                                            "matches": "("}]},
     [("tasks[0].with.checks[0].matches", None)]),
    ({"instructions": "x", "output_schema": {}, "checks": [{"jsonpath": "$.a", "min": 2,
                                                            "max": 1}]},
     [("tasks[0].with.checks[0]", "min is larger than max")]),
])
def test_bad_agent_steps_are_refused_with_paths(with_, expected):
    got = _errors(_workflow(with_))
    assert [path for path, _ in got] == [path for path, _ in expected], got
    for (_, message), (_, wanted) in zip(got, expected, strict=True):
        if wanted is not None:
            assert wanted in message, (message, wanted)


def test_an_agent_step_cannot_fan_out_nor_be_an_undo_step():
    step = {"instructions": "x", "output_schema": {}}
    got = _errors(_workflow(step, for_each="{{ [1, 2] }}"))
    assert got == [("tasks[0].for_each", "an agent step cannot have for_each: it waits for "
                    "one output; give the agent the list in with.inputs instead")]
    got = _errors({"name": "undo", "tasks": [{"id": "a", "type": "noop", "compensate": {
        "type": "agent", "with": step}}]})
    assert got == [("tasks[0].compensate.type", "an undo step cannot be an agent step: "
                    "compensation runs without waiting for anyone")]


def test_every_schema_violation_is_listed_with_its_path():
    bad = {"category": "feature", "confidence": "high",
           "items": [{"sku": "a", "qty": 1}, {"sku": 2, "qty": "x"}]}
    assert output_errors(bad, SCHEMA, []) == [
        {"path": "output.category", "message": "'feature' is not one of ['bug', 'question']"},
        {"path": "output.confidence", "message": "'high' is not of type 'number'"},
        {"path": "output.items[1].qty", "message": "'x' is not of type 'integer'"},
        {"path": "output.items[1].sku", "message": "2 is not of type 'string'"},
    ]
    assert output_errors({}, SCHEMA, []) == [
        {"path": "output", "message": "'category' is a required property"},
        {"path": "output", "message": "'confidence' is a required property"},
    ]
    assert output_errors({"category": "bug", "confidence": 0.5}, SCHEMA, []) == []


def test_every_failed_check_is_listed_once_the_schema_holds():
    checks = [{"jsonpath": "$.confidence", "min": 0, "max": 1},
              {"jsonpath": "$.category", "equals": "bug"},
              {"jsonpath": "$.items[*].sku", "matches": "^SKU-"},
              {"jsonpath": "$.missing", "equals": 1}]
    output = {"category": "question", "confidence": 1.5,
              "items": [{"sku": "SKU-1"}, {"sku": "x-2"}]}
    assert output_errors(output, SCHEMA, checks) == [
        {"path": "output.confidence", "message": "checks[0] ($.confidence): 1.5 is more than "
                                                 "the maximum 1"},
        {"path": "output.category", "message": "checks[1] ($.category): 'question' is not "
                                               "equal to 'bug'"},
        {"path": "output.items[1].sku", "message": "checks[2] ($.items[*].sku): 'x-2' does not "
                                                   "match '^SKU-'"},
        {"path": "output", "message": "checks[3] ($.missing): no value found"},
    ]
    # The checks wait for the schema: their paths assume its shape.
    assert [e["path"] for e in output_errors({"confidence": 9}, SCHEMA, checks)] == ["output"]
    assert output_errors({"n": "7"}, {}, [{"jsonpath": "$.n", "min": 1}]) == [
        {"path": "output.n", "message": "checks[0] ($.n): '7' is not a number (checked "
                                        "against min 1)"}]
