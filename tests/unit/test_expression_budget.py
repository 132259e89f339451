"""The budget of every expression evaluation (issue 11, item 3): a wall-clock limit and a
size cap, a breach an ``ExpressionError`` naming the field, in any thread."""

from __future__ import annotations

import threading

import pytest

from capability import dsl
from capability.dsl import ExpressionError, budget, render

SCOPE = {"params": {"n": 3}, "secrets": {"token": "s3cr3t-t0ken"}}
QUICK = budget.Budget(timeout=0.3)

HUGE_LOOP = ("{% for i in range(100000) %}{% for j in range(100000) %}"
             "{% endfor %}{% endfor %}")


@pytest.mark.parametrize(("path", "text"), [
    ("when", HUGE_LOOP),
    ("when", "{{ range(100000) | map('string') | map('length') | sum "
             "if range(100000) | select('odd') | list | length > 0 else 0 }}"
             "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}"
             "{% endfor %}{% endfor %}"),
    ("with.url", "{% set ns = namespace(n=0) %}{% for i in range(100000) %}"
                 "{% for j in range(100000) %}{% set ns.n = ns.n + 1 %}"
                 "{% endfor %}{% endfor %}{{ ns.n }}"),
])
def test_a_long_evaluation_stops_at_its_budget_naming_the_field(path, text):
    with pytest.raises(ExpressionError) as caught:
        render(text, SCOPE, path, budget=QUICK)
    assert str(caught.value) == f"{path}: expression exceeded its 0.3 s budget"


def test_the_default_budget_is_two_seconds():
    assert budget.Budget().timeout == 2.0
    assert budget.DEFAULT_TIMEOUT == 2.0


def test_the_message_names_the_field_being_evaluated():
    value = {"ok": "{{ params.n }}", "slow": HUGE_LOOP}
    with pytest.raises(ExpressionError, match=r"^with\.slow: expression exceeded"):
        render(value, SCOPE, "with", budget=QUICK)


def test_conditions_and_items_have_the_budget_too():
    with pytest.raises(ExpressionError, match=r"^when: expression exceeded"):
        dsl.evaluate_condition(HUGE_LOOP + "{{ true }}", SCOPE, budget=QUICK)
    with pytest.raises(ExpressionError, match=r"^for_each: expression exceeded"):
        dsl.evaluate_items(HUGE_LOOP, SCOPE, budget=QUICK)


def test_the_budget_works_in_any_thread():
    caught: list[BaseException] = []

    def evaluate() -> None:
        try:
            render(HUGE_LOOP, SCOPE, "when", budget=QUICK)
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=evaluate)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(caught) == 1 and isinstance(caught[0], ExpressionError)
    assert "exceeded its 0.3 s budget" in str(caught[0])


def test_a_recursion_without_loops_stops_too():
    text = ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
            "{{ f(60) }}")
    with pytest.raises(ExpressionError, match=r"^when: expression exceeded"):
        render(text, SCOPE, "when", budget=QUICK)


def test_a_chain_of_filters_stops_too():
    text = "{{ range(100000) | list" + " | map('string') | sort | list" * 60 + " | first }}"
    with pytest.raises(ExpressionError, match=r"^when: expression exceeded"):
        render(text, SCOPE, "when", budget=QUICK)


def test_the_shared_context_manager_limits_any_evaluation():
    # The one mechanism that triggers and connectors reuse: a block of evaluations
    # shares one deadline, nested budgets keep the nearest one.
    with budget.limited(budget.Budget(timeout=0.3)), pytest.raises(ExpressionError):
        render(HUGE_LOOP, SCOPE, "when", budget=budget.Budget(timeout=60))


@pytest.mark.parametrize("text", [
    "{{ 'x'.zfill(10**9) }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ 'x'.rjust(10**9) }}",
    "{{ 'x'.center(10**9) }}",
    "{{ '\t'.expandtabs(10**9) }}",
    "{{ '%100000000d' % 1 }}",
    "{{ '%.100000000f' % 1.5 }}",
    "{{ '%*d' % (100000000, 1) }}",
    "{{ '{:>100000000}'.format(1) }}",
    "{{ '{:>{}}'.format(1, 100000000) }}",
    "{{ '{0:.100000000f}'.format_map({'0': 1.5}) if false else '{:.100000000f}'.format(1.5) }}",
    "{{ ('x' * 1000000).replace('x', 'xx') }}",
    "{{ ('x' * 1000000) | replace('x', 'xx') }}",
    "{{ 'x' | center(100000000) }}",
    "{{ ('a\nb' * 400000) | indent(100) }}",
    "{{ '%100000000d' | format(1) }}",
    "{{ ('x' * 1000000) ~ 'y' }}",
    "{{ ('x' * 1000000) + 'y' }}",
    "{{ (range(100000) | list) + (range(100000) | list) * 9 + [1] }}",
    "{{ ',' .join(['x' * 999999, 'y']) }}",
    "{{ ['x' * 999999, 'y'] | join(',') }}",
    "{{ ['x' * 1000] * 1000 }}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s | length }}",
    "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
])
def test_a_result_too_large_is_refused_before_it_is_built(text):
    with pytest.raises(ExpressionError) as caught:
        render(text, SCOPE, "with.body")
    assert str(caught.value).startswith("with.body: ")
    assert "not allowed: " in str(caught.value) and "1,000,000 items" in str(caught.value)


@pytest.mark.parametrize(("text", "value"), [
    ("{{ 'x'.zfill(5) }}", "0000x"),
    ("{{ 'ab'.center(6, '-') }}", "--ab--"),
    ("{{ '%5d' % 42 }}", "   42"),
    ("{{ '%s-%s' % ('a', 'b') }}", "a-b"),
    ("{{ 10 % 3 }}", 1),
    ("{{ '{:>5}'.format(1) }}", "    1"),
    ("{{ 'a' ~ params.n }}", "a3"),
    ("{{ [1, 2] + [3] }}", [1, 2, 3]),
    ("{{ 'ab' | replace('a', 'xyz') }}", "xyzb"),
    ("{{ '%03d' | format(7) }}", "007"),
    ("{{ ['a', 'b'] | join(',') }}", "a,b"),
    ("{% for i in range(1000) %}{% endfor %}{{ 1 }}", "1"),
])
def test_ordinary_expressions_are_unaffected(text, value):
    assert render(text, SCOPE) == value
