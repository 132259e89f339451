"""Stored outputs are capped (issue 11, item 4): an attempt whose output is over
``TASK_OUTPUT_MAX_BYTES`` fails, not retried, saying how large it was; nothing is
silently truncated, and nothing of the large output is stored."""

from __future__ import annotations

from tests.support.runs import attempts, run_to_end

MIB = 1024 * 1024


def _blob(task_id: str, size: int, **extra):
    return {"id": task_id, "type": "python", "retry": {"max_attempts": 3},
            "with": {"callable": "tests.support.callables:blob", "kwargs": {"size": size}},
            **extra}


def test_an_output_over_the_cap_fails_its_task_without_retry(app, client, op):
    assert app.config["TASK_OUTPUT_MAX_BYTES"] == MIB  # the default
    run = run_to_end(app, client, op, [
        _blob("big", 20 * MIB),
        _blob("small", 1000),
        {"id": "after", "type": "noop", "depends_on": ["big"]},
    ])
    big, small = run["by_task"]["big"], run["by_task"]["small"]
    assert big["status"] == "failed"
    assert big["error"] == "output is 20.0 MB, over TASK_OUTPUT_MAX_BYTES (1.0 MB)"
    assert big["output"] is None
    assert big["attempts"] == 1  # not retried: the same output would come back
    assert [a.status for a in attempts(app, run["id"], "big")] == ["failed"]
    assert run["by_task"]["after"]["status"] == "upstream_failed"
    assert small["status"] == "succeeded" and small["output"] == "x" * 1000


def test_an_instant_task_and_a_for_each_element_are_capped_too(app, client, op):
    run = run_to_end(app, client, op, [
        {"id": "inline", "type": "transform",
         "with": {"value": {"a": "{{ 'x' * 600000 }}", "b": "{{ 'y' * 600000 }}"}}},
        _blob("each", 0, for_each=[10, 2 * MIB],
              **{"with": {"callable": "tests.support.callables:blob",
                          "kwargs": {"size": "{{ item }}"}}}),
    ])
    inline, each = run["by_task"]["inline"], run["by_task"]["each"]
    assert inline["status"] == "failed"
    assert inline["error"] == "output is 1.1 MB, over TASK_OUTPUT_MAX_BYTES (1.0 MB)"
    assert each["status"] == "failed"
    assert each["error"] == "item 1: output is 2.0 MB, over TASK_OUTPUT_MAX_BYTES (1.0 MB)"
