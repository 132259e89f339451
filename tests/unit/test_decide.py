"""The trigger rules and run outcome of DSL.md."""

from __future__ import annotations

import pytest

from capability.engine.decide import Verdict, ready, run_outcome, trigger_verdict

S, F, K, U = "succeeded", "failed", "skipped", "upstream_failed"


@pytest.mark.parametrize(
    ("rule", "upstream", "verdict"),
    [
        ("all_success", [S, S], Verdict.RUN),
        ("all_success", [S, K], Verdict.SKIP),
        ("all_success", [S, F], Verdict.UPSTREAM_FAILED),
        ("all_success", [K, U], Verdict.UPSTREAM_FAILED),
        ("all_done", [F, K, S], Verdict.RUN),
        ("one_success", [F, S], Verdict.RUN),
        ("one_success", [F, F], Verdict.UPSTREAM_FAILED),
        ("one_success", [K, K], Verdict.SKIP),
        ("one_failed", [S, U], Verdict.RUN),
        ("one_failed", [S, K], Verdict.SKIP),
        ("all_failed", [F, U], Verdict.RUN),
        ("all_failed", [F, S], Verdict.SKIP),
        ("none_failed", [S, K], Verdict.RUN),
        ("none_failed", [S, F], Verdict.UPSTREAM_FAILED),
        ("all_success", [S, "running"], Verdict.WAIT),
        ("all_done", ["pending"], Verdict.WAIT),
        ("all_success", [], Verdict.RUN),
    ],
)
def test_trigger_rules(rule, upstream, verdict):
    assert trigger_verdict(rule, upstream) == verdict


def test_ready_only_decides_tasks_whose_upstreams_finished():
    upstream = {"a": [], "b": ["a"], "c": ["a", "b"]}
    rules = {"a": "all_success", "b": "all_success", "c": "all_success"}
    status = {"a": S, "b": "pending", "c": "pending"}
    assert ready(["b", "c"], upstream, rules, status) == {"b": Verdict.RUN}


def test_run_outcome():
    assert run_outcome([S, K]) == "succeeded"
    assert run_outcome([S, U]) == "failed"
    assert run_outcome([S, "cancelled"]) == "cancelled"
    assert run_outcome([S, "running"]) is None
