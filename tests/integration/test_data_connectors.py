"""The ``validate`` and ``jsonpath`` connectors in a run on a real worker: saved through
the API (a bad schema is a 422 with its path), their outputs flowing downstream, a
schema violation failing the task without a retry; both in the definitions' JSON
Schema."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.support.runs import make, run_to_end

PAYLOAD = {"orders": [{"id": 1, "total": 30}, {"id": 2, "total": 70}]}
SCHEMA = {"type": "array", "items": {"type": "integer", "minimum": 50}}


def test_outputs_flow_from_jsonpath_through_validate(app: Flask, client: FlaskClient,
                                                     op: dict[str, Any]) -> None:
    run = run_to_end(app, client, op, [
        {"id": "data", "type": "noop", "with": {"value": PAYLOAD}},
        {"id": "big", "type": "jsonpath", "depends_on": ["data"],
         "with": {"input": "{{ tasks.data.output }}", "path": "$.orders[?total > 50].total"}},
        {"id": "check", "type": "validate", "depends_on": ["big"],
         "with": {"value": "{{ tasks.big.output }}", "schema": SCHEMA}},
        {"id": "first", "type": "jsonpath", "depends_on": ["data"],
         "with": {"input": "{{ tasks.data.output }}", "path": "$.orders[*].id",
                  "first": True}},
    ])
    assert run["status"] == "succeeded", run
    assert run["by_task"]["big"]["output"] == [70]
    assert run["by_task"]["check"]["output"] == [70]
    assert run["by_task"]["first"]["output"] == 1


def test_a_violation_fails_the_task_once_whatever_the_retry_policy(
        app: Flask, client: FlaskClient, op: dict[str, Any]) -> None:
    run = run_to_end(app, client, op, [
        {"id": "check", "type": "validate",
         "retry": {"max_attempts": 3, "delay": "50ms", "jitter": False},
         "with": {"value": [10, 70, "x"], "schema": SCHEMA}},
    ])
    assert run["status"] == "failed"
    task = run["by_task"]["check"]
    assert task["attempts"] == 1, task
    assert "$[0]: 10 is less than the minimum of 50" in task["error"]
    assert "$[2]: 'x' is not of type 'integer'" in task["error"]


def test_a_bad_schema_is_a_422_and_both_types_are_in_the_json_schema(
        client: FlaskClient, op: dict[str, Any]) -> None:
    r = client.post("/api/v1/workflows/", headers=op["h"], json={
        "team": op["team"]["name"], "definition": {"name": "bad-schema", "tasks": [
            {"id": "a", "type": "validate", "with": {"value": 1, "schema": {"type": 3}}}]}})
    assert r.status_code == 422, r.get_json()
    assert "tasks[0].with.schema" in str(r.get_json())
    schema = client.get("/api/v1/workflows/schema", headers=op["h"]).get_json()
    text = str(schema)
    assert "validate" in text and "jsonpath" in text
    make(client, op, [{"id": "a", "type": "jsonpath", "with": {"input": [1], "path": "$[0]"}}])
