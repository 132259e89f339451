"""A `python` callable that leaves the allowed modules is refused when the definition is
saved (422 with its path) and again by the worker before the call (issue 11, item 1)."""

from __future__ import annotations

import pytest

from tests.support.app import unique
from tests.support.engine import drain
from tests.support.runs import get_run, start_id

ESCAPES = ["json:codecs.open", "json:codecs.builtins.open", "json:codecs.sys.exit"]


def _save(client, op, tasks):
    return client.post("/api/v1/workflows/", headers=op["h"], json={
        "team": op["team"]["name"], "definition": {"name": unique("py"), "tasks": tasks}})


@pytest.mark.parametrize("target", ESCAPES)
def test_an_escape_from_the_allowed_module_is_refused_on_save(app, client, op, monkeypatch,
                                                              target):
    monkeypatch.setitem(app.config, "PYTHON_TASK_PREFIXES", ["json", "tests.support.callables"])
    r = _save(client, op, [
        {"id": "ok", "type": "noop"},
        {"id": "p", "type": "python", "with": {"callable": target, "kwargs": {"status": 3}},
         "compensate": {"type": "python", "with": {"callable": target}}},
    ])
    assert r.status_code == 422, r.get_json()
    errors = {e["path"]: e["message"] for e in r.get_json()["errors"]}
    expected = (f"{target!r} leaves the allowed modules: json:codecs is a module"
                " (name a function defined in an allowed module)")
    assert errors == {"tasks[1].with.callable": expected,
                      "tasks[1].compensate.with.callable": expected}
    checked = client.post("/api/v1/workflows/validate", headers=op["h"], json={
        "definition": {"name": "x", "tasks": [
            {"id": "p", "type": "python", "with": {"callable": target}}]}})
    assert [e["path"] for e in checked.get_json()["errors"]] == ["tasks[0].with.callable"]


def test_a_callable_outside_the_prefixes_is_refused_on_save(app, client, op):
    r = _save(client, op, [{"id": "p", "type": "python", "with": {"callable": "os:getcwd"}}])
    assert r.status_code == 422
    assert r.get_json()["errors"] == [{
        "path": "tasks[0].with.callable",
        "message": "'os:getcwd' is not under an allowed prefix (tests.support.callables)"}]


def test_a_value_that_is_not_callable_is_refused_on_save(app, client, op):
    r = _save(client, op, [{"id": "p", "type": "python",
                            "with": {"callable": "tests.support.callables:ANSWER"}}])
    assert r.status_code == 422
    assert r.get_json()["errors"][0]["message"] == (
        "'tests.support.callables:ANSWER' is not callable")


@pytest.mark.parametrize("target", ESCAPES)
def test_the_worker_refuses_an_escape_saved_where_the_web_does_not_check(
        app, client, op, monkeypatch, target):
    # A web without PYTHON_TASK_PREFIXES leaves the check to the workers.
    monkeypatch.setitem(app.config, "PYTHON_TASK_PREFIXES", [])
    r = _save(client, op, [{"id": "p", "type": "python",
                            "with": {"callable": target, "kwargs": {"status": 3}},
                            "retry": {"max_attempts": 3, "delay": "50ms"}}])
    assert r.status_code == 201, r.get_json()
    monkeypatch.setitem(app.config, "PYTHON_TASK_PREFIXES", ["json"])
    run_id = start_id(client, op, str(r.get_json()["id"]))
    assert drain(app, run_id) == "failed"
    task = get_run(client, op, run_id)["by_task"]["p"]
    assert task["status"] == "failed" and task["attempts"] == 1
    assert task["error"] == (f"with.callable: {target!r} leaves the allowed modules:"
                             " json:codecs is a module (name a function defined in an"
                             " allowed module)")


def test_a_function_of_an_allowed_module_still_runs(app, client, op, monkeypatch):
    monkeypatch.setitem(app.config, "PYTHON_TASK_PREFIXES", ["json", "tests.support.callables"])
    r = _save(client, op, [
        {"id": "add", "type": "python",
         "with": {"callable": "tests.support.callables:add", "kwargs": {"a": 2, "b": 3}}},
        {"id": "dump", "type": "python",
         "with": {"callable": "json:dumps", "kwargs": {"obj": [1]}}},
    ])
    assert r.status_code == 201, r.get_json()
    run_id = start_id(client, op, str(r.get_json()["id"]))
    assert drain(app, run_id) == "succeeded"
    by = get_run(client, op, run_id)["by_task"]
    assert by["add"]["output"] == 5 and by["dump"]["output"] == "[1]"
