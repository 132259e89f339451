"""The rules of the engine as pure functions: trigger rules and run outcome of DSL.md,
why a task did not run, which controls a run allows, who may answer an approval, the
retry decision, unknown queues."""

from __future__ import annotations

import pytest

from capability import dsl
from capability.engine.decide import (
    Counts,
    Verdict,
    controls_of,
    may_answer,
    reason_of,
    run_outcome,
    trigger_verdict,
    unknown_queues,
)
from capability.engine.state import retry_decision

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


def test_run_outcome():
    assert run_outcome([S, K]) == "succeeded"
    assert run_outcome([S, U]) == "failed"
    assert run_outcome([S, "cancelled"]) == "cancelled"
    assert run_outcome([S, "running"]) is None


@pytest.mark.parametrize(
    ("rule", "statuses", "reason"),
    [
        ("all_success", {"a": S, "b": K}, "upstream skipped: b"),
        ("all_success", {"a": F, "b": U, "c": S}, "upstream failed: a, b"),
        ("none_failed", {"a": S, "b": F}, "upstream failed: b"),
        ("one_success", {"a": K, "b": K}, "trigger rule one_success: every upstream was skipped"),
        ("one_success", {"a": F}, "trigger rule one_success: no upstream succeeded "
                                  "(upstream failed: a)"),
        ("one_failed", {"a": S}, "trigger rule one_failed: no upstream failed"),
        ("all_failed", {"a": F, "b": S},
         "trigger rule all_failed: not every upstream failed (1 of 2 did)"),
        ("all_success", {f"t{i}": F for i in range(5)}, "upstream failed: t0, t1, t2 and 2 more"),
    ],
)
def test_why_a_task_did_not_run(rule, statuses, reason):
    counts = Counts.of(statuses.values())
    verdict = trigger_verdict(rule, statuses.values())
    assert verdict in (Verdict.SKIP, Verdict.UPSTREAM_FAILED)
    assert reason_of(rule, verdict, counts, statuses) == reason


def test_a_join_of_hundreds_says_how_many_upstreams_failed():
    counts = Counts.by_status({S: 297, F: 3})
    assert reason_of("all_success", Verdict.UPSTREAM_FAILED, counts) == \
        "upstream failed: 3 of 300 upstream tasks"


@pytest.mark.parametrize(
    ("status", "facts", "allowed"),
    [
        ("queued", {"admitted": True}, ("cancel", "pause")),
        ("queued", {}, ("cancel",)),
        ("running", {}, ("cancel", "pause")),
        ("running", {"failed_tasks": True}, ("cancel", "pause", "retry")),
        ("paused", {}, ("cancel", "resume")),
        ("failed", {"failed_tasks": True}, ("retry",)),
        ("cancelled", {"failed_tasks": True}, ("retry",)),
        ("failed", {"failed_tasks": True, "compensated": True}, ()),
        ("succeeded", {}, ()),
    ],
)
def test_which_controls_a_run_allows(status, facts, allowed):
    rule = controls_of(status, compensated=facts.get("compensated", False),
                       failed_tasks=facts.get("failed_tasks", False),
                       admitted=facts.get("admitted", False))
    assert rule.allowed == allowed
    assert set(rule.blocked) == {"cancel", "pause", "resume", "retry"} - set(allowed)


def test_retry_blocked_says_why_only_for_a_failed_or_cancelled_run():
    compensated = controls_of("failed", compensated=True, failed_tasks=True, admitted=False)
    assert compensated.retry_blocked.startswith("Compensations ran")
    assert controls_of("succeeded", compensated=False, failed_tasks=False,
                       admitted=False).retry_blocked is None
    waiting = controls_of("queued", compensated=False, failed_tasks=False, admitted=False)
    assert waiting.blocked["pause"].startswith("The run is waiting for a slot")


def test_who_may_answer_an_approval():
    assert may_answer(frozenset({"Operator"}), "Operator")
    assert not may_answer(frozenset({"Author"}), "Operator")
    assert may_answer(frozenset({"Admin"}), "Operator")
    assert may_answer(frozenset({"Author"}), None)


def test_the_one_retry_decision():
    spec = dsl.TaskSpec.model_validate({"id": "t", "type": "noop", "retry": {
        "max_attempts": 3, "backoff": "exponential", "delay": "2s", "jitter": False}})
    definition = dsl.validate_definition({"name": "r", "tasks": [
        {"id": "t", "type": "noop"}]}).definition
    assert definition is not None
    first = retry_decision(spec, definition, 1, retriable=True)
    assert (first.again, first.wait) == (True, 2.0)
    assert retry_decision(spec, definition, 2, retriable=True).wait == 4.0
    assert not retry_decision(spec, definition, 3, retriable=True).again  # budget spent
    assert not retry_decision(spec, definition, 1, retriable=False).again
    # Without a policy of its own: the workflow's default, else one attempt.
    plain = definition.tasks[0]
    assert not retry_decision(plain, definition, 1, retriable=True).again


def test_a_start_is_refused_for_a_queue_no_worker_serves():
    definition = dsl.validate_definition({"name": "q", "tasks": [
        {"id": "a", "type": "noop"}, {"id": "b", "type": "noop", "queue": "gpu"}]}).definition
    assert definition is not None
    assert unknown_queues(definition, ["default"]) == [
        {"path": "tasks[1].queue",
         "message": "no worker listens on queue 'gpu' (configured: default)"}]
    assert unknown_queues(definition, None) == []
