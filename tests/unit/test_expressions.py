"""Expressions: native and interpolated rendering, errors naming the field, the sandbox,
secret masking, and durations."""

from __future__ import annotations

import pytest

from capability import dsl
from capability.dsl import ExpressionError, render

SCOPE = {
    "params": {"since": "2024-01-01", "limit": 100, "dry_run": False, "tags": ["a", "b"],
               "items": "a param called items"},
    "tasks": {
        "fetch": {"status": "succeeded", "error": None,
                  "output": {"status": 200, "json": {"orders": [{"id": 7}, {"id": 8}],
                                                      "items": [1, 2]}}},
        "push": {"status": "failed", "error": "HTTP 500", "output": None},
    },
    "run": {"id": "r-1", "trigger": "manual"},
    "secrets": {"token": "s3cr3t-t0ken"},
    "item": {"id": 7},
    "index": 0,
}


# ---------------------------------------------------------------- native vs text

@pytest.mark.parametrize(("text", "value"), [
    ("{{ params.limit }}", 100),
    ("{{ params.limit * 2 }}", 200),
    ("{{ params.dry_run }}", False),
    ("{{ params.nothing_here is defined }}", False),
    ("{{ none }}", None),
    ("{{ params.tags }}", ["a", "b"]),
    ("{{ tasks.fetch.output.json.orders }}", [{"id": 7}, {"id": 8}]),
    ("{{ tasks.fetch.output }}", {"status": 200, "json": {"orders": [{"id": 7}, {"id": 8}],
                                                          "items": [1, 2]}}),
    ("{{ item }}", {"id": 7}),
    ("{{ (1, 2) }}", [1, 2]),
    ("{{ '42' }}", "42"),  # a string stays a string: no guessing
    ("  {{ params.limit }}\n", 100),
    ("{{- params.limit -}}", 100),
    ("{{ -params.limit }}", -100),
    ("{{ tasks.push.status == 'failed' }}", True),
    ("{{ tasks.fetch.output.json['orders'] | map(attribute='id') | list }}", [7, 8]),
])
def test_one_expression_yields_its_native_value(text, value):
    assert render(text, SCOPE) == value


@pytest.mark.parametrize(("text", "value"), [
    ("https://shop.example/orders?since={{ params.since }}",
     "https://shop.example/orders?since=2024-01-01"),
    ("{{ params.limit }}{{ params.limit }}", "100100"),
    ("n={{ params.limit }}", "n=100"),
    ("{{ params.tags }} / {{ item }}", '["a", "b"] / {"id": 7}'),
    ("{{ params.dry_run }} {{ none }}", "false null"),
    ("{% for o in tasks.fetch.output.json.orders %}{{ o.id }},{% endfor %}", "7,8,"),
    ("line\n{{ run.id }}\n", "line\nr-1\n"),
    ("no template here", "no template here"),
])
def test_other_templates_are_interpolated_as_text(text, value):
    assert render(text, SCOPE) == value


def test_keys_of_data_win_over_dict_methods():
    assert render("{{ tasks.fetch.output.json.items }}", SCOPE) == [1, 2]
    assert render("{{ params.items }}", SCOPE) == "a param called items"


def test_render_walks_nested_structures_and_leaves_other_values():
    value = {"url": "https://x/{{ item.id }}", "json": {"ids": ["{{ index }}", 3, None, True]},
             "{{ key }}": "keys are not templates"}
    assert render(value, SCOPE) == {
        "url": "https://x/7", "json": {"ids": [0, 3, None, True]},
        "{{ key }}": "keys are not templates"}


def test_conditions_and_items():
    assert dsl.evaluate_condition("{{ tasks.push.status == 'failed' }}", SCOPE) is True
    assert dsl.evaluate_condition("{{ params.tags | length > 5 }}", SCOPE) is False
    assert dsl.evaluate_condition("{{ tasks.fetch.error }}", SCOPE) is False
    assert dsl.evaluate_items("{{ tasks.fetch.output.json.orders }}", SCOPE) == [
        {"id": 7}, {"id": 8}]
    assert dsl.evaluate_items(["{{ params.limit }}", "x"], SCOPE) == [100, "x"]
    with pytest.raises(ExpressionError) as info:
        dsl.evaluate_items("{{ params.limit }}", SCOPE)
    assert str(info.value) == "for_each: for_each must yield a list, got a number"


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize(("value", "message"), [
    ({"url": "https://x/{{ params.nope }}"}, "with.url: 'params' has no 'nope'"),
    ({"url": "{{ nope }}"}, "with.url: 'nope' is undefined"),
    ({"json": {"a": ["{{ tasks.gone.output }}"]}}, "with.json.a[0]: 'tasks' has no 'gone'"),
    ({"url": "{{ tasks.fetch.outputs }}"}, "with.url: 'tasks.fetch' has no 'outputs'"),
    ({"url": "{{ secrets.missing }}"}, "with.url: unknown secret 'missing'"),
    ({"url": "{{ [params.nope] }}"}, "with.url: 'params' has no 'nope'"),
    ({"n": "{{ 1 / 0 }}"}, "with.n: division by zero (ZeroDivisionError)"),
    ({"n": "{{ params.since + 1 }}"}, "with.n: "),
    ({"n": "{{ range }}"}, "with.n: the expression yields a function, which is not a JSON value"),
    ({"n": "{{ x | no_such_filter }}"}, "with.n: invalid expression: No filter named"),
])
def test_failures_name_the_field_and_the_cause(value, message):
    with pytest.raises(ExpressionError) as info:
        render(value, SCOPE, "with")
    assert str(info.value).startswith(message)
    assert info.value.path == message.split(":")[0]
    assert info.value.retriable is False


@pytest.mark.parametrize("text", [
    "{{ ''.__class__ }}",
    "{{ params.since.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ params._label }}",
    "{{ params.tags.append('x') }}",
    "{{ cycler.__init__.__globals__ }}",
    "x {{ ''.__class__ }}",
    "{{ 'a' * 10000000 }}",
    "{{ 2 ** 100000 }}",
])
def test_the_sandbox_refuses_escapes_and_blowups(text):
    with pytest.raises(ExpressionError) as info:
        render(text, SCOPE, "with.value")
    assert info.value.path == "with.value"
    assert "not allowed" in info.value.cause or "unsafe" in info.value.cause


def test_a_secret_in_an_error_message_is_masked():
    with pytest.raises(ExpressionError) as info:
        render("{{ params[secrets.token] }}", SCOPE, "with.url")
    assert "s3cr3t" not in str(info.value) and "***" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


# ---------------------------------------------------------------- analysis

def test_find_expressions_gives_paths_in_document_order():
    value = {"url": "https://x/{{ a }}", "headers": {"X": "plain", "Y": "{% if b %}1{% endif %}"},
             "json": [1, "{# note #}", {"k": "{{ c }}"}]}
    assert dsl.find_expressions(value, "tasks[0].with") == [
        ("tasks[0].with.url", "https://x/{{ a }}"),
        ("tasks[0].with.headers.Y", "{% if b %}1{% endif %}"),
        ("tasks[0].with.json[1]", "{# note #}"),
        ("tasks[0].with.json[2].k", "{{ c }}"),
    ]
    assert dsl.find_expressions("{{ x }}") == [("", "{{ x }}")]
    assert dsl.find_expressions(5) == []


def test_check_syntax():
    assert dsl.check_syntax("{{ a.b | default(1) }}") is None
    assert dsl.check_syntax("{{ a ") == (
        "unexpected end of template, expected 'end of print statement'.")
    assert dsl.check_syntax("one\n{{ a b }}") == (
        "expected token 'end of print statement', got 'b' (line 2)")
    assert dsl.check_syntax("{{ a | nope }}") == "No filter named 'nope'."


def test_referenced_tasks_names_and_keys():
    text = "{{ tasks.a.output }} {{ tasks['b'].status }} {{ other.tasks.c }} {{ params.x }}"
    assert dsl.referenced_tasks(text) == {"a", "b"}
    assert dsl.referenced_keys(text, "params") == {"x"}
    assert dsl.referenced_names(text) == {"tasks", "other", "params"}
    loop = "{% for o in range(3) %}{{ o }}{{ loop.index }}{% endfor %}"
    assert dsl.referenced_names(loop) == set()
    assert dsl.referenced_tasks("{{ broken ") == set()


def test_is_template():
    assert dsl.is_template("a {{ b }}") and dsl.is_template("{% if x %}{% endif %}")
    assert not dsl.is_template("plain {text}") and not dsl.is_template(5)


# ---------------------------------------------------------------- masking

def test_mask_secrets_everywhere_in_a_structure():
    value = {"url": "https://u:s3cr3t@x", "s3cr3t": ["a s3cr3t b", 5, None],
             "nested": {"t": ("s3cr3t-long",)}}
    assert dsl.mask_secrets(value, ["s3cr3t", "s3cr3t-long", "", None]) == {
        "url": "https://u:***@x", "***": ["a *** b", 5, None], "nested": {"t": ["***"]}}
    assert value["url"] == "https://u:s3cr3t@x"  # the input is left alone
    assert dsl.mask_secrets(value, []) is value
    assert dsl.mask_text("a.b a+b", ["a.b"]) == "*** a+b"  # secrets are literal, not patterns


# ---------------------------------------------------------------- durations

@pytest.mark.parametrize(("value", "seconds"), [
    ("30s", 30), ("5m", 300), ("1h", 3600), ("250ms", 0.25), ("2d", 172800), ("1.5m", 90),
    (" 10 s ", 10), ("90", 90), ("0.5", 0.5), (12, 12), (2.5, 2.5), (0, 0),
])
def test_durations(value, seconds):
    assert dsl.parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "soon", "5 minutes", "-1s", -3, True, None, [1], "1h30m",
                                   float("inf"), "1e3"])
def test_bad_durations_say_how_to_write_one(value):
    with pytest.raises(ValueError, match="duration"):
        dsl.parse_duration(value)


def test_format_duration():
    assert [dsl.format_duration(s) for s in (0, 0.25, 30, 90, 300, 3600, 86400, 1.5)] == [
        "0s", "250ms", "30s", "90s", "5m", "1h", "1d", "1500ms"]


def test_secret_references_name_what_a_template_reads():
    """The engine decrypts only the secrets a task's templates name; reading ``secrets``
    as a whole (or a template that does not parse) means any of them."""
    from capability.dsl import secret_references

    assert secret_references({"a": "{{ secrets.token }}", "b": ["x {{ secrets['key2'] }}"],
                              "c": "{{ params.secrets }}", "d": "plain"}) == {"token", "key2"}
    assert secret_references("{{ tasks.a.output }}") == frozenset()
    assert secret_references("{{ secrets | length }}") is None
    assert secret_references("{{ secrets[params.which] }}") is None
    assert secret_references("{{ secrets. }}") is None
