"""Connectors join as task types through one all-or-nothing registry
(``capability.connectors.registry``): a bad one in a batch names itself and none of
the batch is registered; a registered one runs through the engine's executor with its
``with`` validated and its failures classed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from capability import dsl
from capability.connectors import registry
from capability.connectors.sdk import Connector, ConnectorError, Context, Templated, With
from capability.engine.executors import EXECUTORS
from capability.engine.settings import EngineSettings
from capability.engine.state import AttemptContext


class EchoWith(With):
    """Echoes text, n times."""

    text: str
    times: Templated[int] = 1


class Echo(Connector):
    type = "test_echo"
    With = EchoWith

    def execute(self, context: Context) -> Any:
        if context.with_.text == "flaky":
            raise ConnectionError("refused")
        if context.with_.text == "broken":
            raise ValueError("bad input")
        if context.with_.text == "said":
            raise ConnectorError("the peer said no", retriable=True)
        return context.with_.text * context.with_.times

    def retriable(self, exc: Exception) -> bool:
        return isinstance(exc, ConnectionError)


class Other(Echo):
    type = "test_other"


class BadName(Echo):
    type = "Test-Bad"


class NoExecute(Connector):
    type = "test_no_execute"
    With = EchoWith


class NotAModel(Echo):
    type = "test_not_a_model"
    With = dict  # type: ignore[assignment]


class Taken(Echo):
    type = "http"


class NotAConnector:
    type = "test_plain"


@pytest.fixture()
def cleanup() -> Iterator[None]:
    before = set(EXECUTORS)
    yield
    for name in set(EXECUTORS) - before:
        dsl.registry.unregister(name)
        EXECUTORS.pop(name, None)
        registry._installed.pop(name, None)


@pytest.mark.parametrize(("bad", "says"), [
    (BadName, "is not a task type name"),
    (NoExecute, "execute(context) is not implemented"),
    (NotAModel, "With must be a pydantic model"),
    (Taken, "task type 'http' is already taken"),
    (NotAConnector, "not a subclass"),
])
def test_a_bad_connector_refuses_the_whole_batch(cleanup: None, bad: Any, says: str) -> None:
    before = dsl.registry.names()
    with pytest.raises(registry.ConnectorRefused, match=says.replace("(", r"\(")
                       .replace(")", r"\)")):
        registry.install([Echo, bad, Other])
    assert dsl.registry.names() == before
    assert "test_echo" not in EXECUTORS and "test_other" not in EXECUTORS


def _attempt(task_type: str = "test_echo") -> AttemptContext:
    definition = dsl.validate_definition({"name": "w", "tasks": [
        {"id": "a", "type": task_type, "with": {"text": "x"}}]}).definition
    assert definition is not None
    return AttemptContext(attempt_id="att-1", number=1, run_id="run-1",
                          task=definition.tasks[0], definition=definition)


def test_a_connector_runs_and_its_failures_are_classed(cleanup: None) -> None:
    assert registry.install([Echo]) == ["test_echo"]
    assert registry.install([Echo]) == []  # a second call in the process: nothing new
    # Saved with a template where an int goes; the model says so in the schema too.
    result = dsl.validate_definition({"name": "w", "params": {"n": {"type": "integer"}},
                                      "tasks": [{"id": "a", "type": "test_echo", "with": {
                                          "text": "x", "times": "{{ params.n }}",
                                          "colour": "red"}}]})
    assert [(e["path"], e["message"]) for e in result.errors] == [
        ("tasks[0].with.colour", "unknown field")]
    run = EXECUTORS["test_echo"]
    settings = EngineSettings()
    ok = run({"text": "ab", "times": 2}, _attempt(), settings)
    assert (ok.ok, ok.output) == (True, "abab")
    refused = run({"text": "ab", "times": "{{ x }}"}, _attempt(), settings)
    assert not refused.ok and not refused.retriable and "times" in (refused.error or "")
    flaky = run({"text": "flaky"}, _attempt(), settings)
    assert (flaky.ok, flaky.retriable, flaky.error) == (
        False, True, "ConnectionError: refused")
    broken = run({"text": "broken"}, _attempt(), settings)
    assert (broken.ok, broken.retriable) == (False, False)
    said = run({"text": "said"}, _attempt(), settings)
    assert (said.ok, said.retriable, said.error) == (False, True, "the peer said no")


def test_the_built_in_connectors_are_task_types() -> None:
    assert {"validate", "jsonpath"} <= set(registry.installed()) or _installs()
    for name in ("validate", "jsonpath"):
        assert name in dsl.registry and name in EXECUTORS
        assert dsl.registry.get(name).description


def _installs() -> bool:
    registry.install()
    return {"validate", "jsonpath"} <= set(registry.installed())


class Chatty(Connector):
    type = "test_chatty"
    With = EchoWith

    def execute(self, context: Context) -> Any:
        context.log("warning", f"calling with {context.with_.text}")
        return {"cancelled": context.cancelled(), "left": context.remaining() > 0}


def test_log_lines_go_to_the_attempt_s_log_with_secrets_masked(cleanup: None) -> None:
    from capability.engine import masking, tasklog

    registry.install([Chatty])
    ctx = _attempt("test_chatty")
    ctx.scope = {"secrets": {"token": "s3cr3t-value"}}
    scope = ctx.scope
    ctx.log = tasklog.Writer(ctx.attempt_id, 10, lambda m: masking.text(m, scope) or "")
    out = EXECUTORS["test_chatty"]({"text": "s3cr3t-value"}, ctx, EngineSettings())
    assert out.ok and out.output == {"cancelled": False, "left": True}
    [line] = ctx.log.lines
    assert line["message"] == "calling with ***" and line["level"] == "warning"
