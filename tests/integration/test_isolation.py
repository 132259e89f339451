"""`python` tasks run in a process of their own: a crash fails only that attempt, the
output crosses back as JSON, and the worker (here: the test process) lives on."""

from __future__ import annotations

import os

from tests.support.app import unique
from tests.support.runs import run_to_end


def test_a_crashing_callable_fails_its_attempt_which_is_retried(app, client, op):
    key = unique("crash")
    run = run_to_end(app, client, op, [
        {"id": "long", "type": "python",
         "with": {"callable": "tests.support.callables:crash_first", "kwargs": {"key": key}},
         "retry": {"max_attempts": 2, "delay": "50ms", "jitter": False}},
    ])
    task = run["by_task"]["long"]
    assert run["status"] == "succeeded", run
    history = task["attempt_history"]
    assert [a["status"] for a in history] == ["failed", "succeeded"]
    assert history[0]["error"] == "the task's process was killed by SIGKILL"
    assert task["output"]["calls"] == 2
    assert task["output"]["pid"] != os.getpid()  # not this process: it is alive


def test_an_output_that_is_not_json_fails_without_retry(app, client, op):
    run = run_to_end(app, client, op, [
        {"id": "p", "type": "python", "with": {"callable": "tests.support.callables:not_json"},
         "retry": {"max_attempts": 3, "delay": "50ms"}},
    ])
    task = run["by_task"]["p"]
    assert task["status"] == "failed" and task["attempts"] == 1
    assert task["error"].startswith("with.callable: returned a value that is not JSON")


def test_each_call_gets_a_fresh_process_and_exceptions_keep_their_message(
        app, client, op):
    run = run_to_end(app, client, op, [
        {"id": "a", "type": "python", "with": {"callable": "tests.support.callables:my_pid"}},
        {"id": "b", "type": "python", "with": {"callable": "tests.support.callables:my_pid"}},
        {"id": "c", "type": "python",
         "with": {"callable": "tests.support.callables:flaky",
                  "kwargs": {"key": unique("flaky"), "fail_times": 5}}},
    ])
    by = run["by_task"]
    assert by["a"]["output"] != by["b"]["output"]
    assert os.getpid() not in (by["a"]["output"], by["b"]["output"])
    assert by["c"]["error"] == "RuntimeError: flaky failure 1"

