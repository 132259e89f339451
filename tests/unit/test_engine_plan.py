"""The pure parts of incremental advance: which tasks a template reads, the plan of a
version (graph both ways, cached reads), and verdicts from status counts."""

from __future__ import annotations

import itertools

import pytest

from capability import dsl
from capability.engine.decide import (
    Counts,
    Verdict,
    outcome_of,
    plan_of,
    run_outcome,
    trigger_verdict,
    verdict_of,
)

STATUSES = ["succeeded", "failed", "skipped", "upstream_failed", "cancelled", "pending",
            "running"]


@pytest.mark.parametrize(("value", "expected"), [
    ("{{ tasks.a.output }}", {"a"}),
    ("{{ tasks['b'].status }} and {{ tasks.c.error }}", {"b", "c"}),
    ("{{ tasks.a.output[tasks.b.output] }}", {"a", "b"}),
    ({"url": "{{ tasks.a.output.url }}", "list": ["x", "{{ tasks.z.output }}"]}, {"a", "z"}),
    ("{{ params.x }} {{ run.id }}", set()),
    ("plain text", set()),
    (None, set()),
    ([1, 2, 3], set()),
    ("{{ tasks.items() | list }}", {"items"}),  # a dict method: the engine reads all
    ("{{ tasks[name].output }}", None),
    ("{{ tasks | length }}", None),
    ("{% for t in tasks %}{{ t }}{% endfor %}", None),
    ("{% set t = tasks %}{{ t.a.output }}", None),
    ("{{ unclosed", None),
])
def test_task_references(value, expected):
    found = dsl.task_references(value)
    assert (None if found is None else set(found)) == expected


def _definition(tasks):
    result = dsl.validate_definition({"name": "wf", "tasks": tasks})
    assert result.definition is not None, result.errors
    return result.definition


def test_plan_of_a_definition_is_built_once_and_knows_the_graph():
    definition = _definition([
        {"id": "a", "type": "noop"},
        {"id": "b", "type": "noop", "depends_on": ["a"], "with": {"value": "{{ tasks.a.output }}"}},
        {"id": "c", "type": "noop", "depends_on": ["a", "b"], "trigger_rule": "all_done",
         "when": "{{ tasks.items() | list | length > 1 }}"},
        {"id": "d", "type": "noop", "depends_on": ["c"], "for_each": "{{ tasks.b.output }}"},
    ])
    plan = plan_of(definition)
    assert plan_of(definition) is plan
    assert plan.downstream == {"a": ("b", "c"), "b": ("c",), "c": ("d",), "d": ()}
    assert plan.upstream["c"] == ("a", "b")
    assert plan.rules["c"] == "all_done"
    assert plan.position == {"a": 0, "b": 1, "c": 2, "d": 3}
    assert plan.reads(plan.specs["b"], "with") == {"a"}
    assert plan.reads(plan.specs["c"], "when") is None  # tasks.items(): every task
    assert plan.reads(plan.specs["d"], "for_each") == {"b"}
    assert plan.reads(plan.specs["a"], "with") == frozenset()
    assert plan.queues["a"] == "default" and plan.timeouts["a"] is None


def test_upstream_filter_names_the_fewer_ids():
    leaves = [f"l{i}" for i in range(10)]
    definition = _definition(
        [{"id": "root", "type": "noop"}]
        + [{"id": leaf, "type": "noop", "depends_on": ["root"]} for leaf in leaves]
        + [{"id": "join", "type": "noop", "depends_on": leaves}])
    plan = plan_of(definition)
    assert plan.upstream_filter("l3") == (True, ("root",))
    # The join's 10 upstreams are most of the 12 tasks: select the 2 others instead.
    assert plan.upstream_filter("join") == (False, ("root", "join"))


@pytest.mark.parametrize("rule", [r.value for r in dsl.TriggerRule])
def test_verdicts_from_counts_match_verdicts_from_statuses(rule):
    for size in range(4):
        for combo in itertools.product(STATUSES, repeat=size):
            assert verdict_of(rule, Counts.of(combo)) == trigger_verdict(rule, combo), combo


def test_outcome_from_counts_matches_outcome_from_statuses():
    for combo in itertools.product(STATUSES, repeat=3):
        counts: dict[str, int] = {}
        for status in combo:
            counts[status] = counts.get(status, 0) + 1
        assert outcome_of(counts) == run_outcome(combo), combo
    assert verdict_of("all_success", Counts()) == Verdict.RUN
