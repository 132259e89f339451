"""The `python` allow-list resolves the callable and checks what it reaches, not only
the module named before the colon (issue 11, item 1)."""

from __future__ import annotations

import json

import pytest

from capability import callables
from capability.engine.executors import python
from capability.engine.settings import EngineSettings
from tests.support import callables as support

ALLOWED = ("json", "tests.support.callables")


@pytest.mark.parametrize(("target", "why"), [
    ("json:codecs.open", "json:codecs is a module"),
    ("json:codecs.builtins.open", "json:codecs is a module"),
    ("json:codecs.sys.exit", "json:codecs is a module"),
    ("tests.support.callables:os", "tests.support.callables:os is a module"),
    ("tests.support.callables:time.sleep", "tests.support.callables:time is a module"),
    ("tests.support.callables:add.__call__", "add.__call__ is a Python builtin"),
    ("tests.support.callables:add.__class__", "add.__class__ is a Python builtin"),
    ("tests.support.callables:Path", "defined in pathlib, which is not under an allowed"),
    ("json.decoder:scanstring", "json.decoder:scanstring is a Python builtin"),
    ("jsonschema:validate", "is not under an allowed prefix (json, tests.support"),
    ("tests.support.callables:missing", "cannot import"),
    ("tests.support.callables:ANSWER", "is not callable"),
])
def test_a_callable_that_leaves_the_allowed_modules_is_refused(target, why):
    with pytest.raises(callables.CallableRefused) as refused:
        callables.resolve(target, ALLOWED)
    assert why in str(refused.value)
    assert repr(target) in str(refused.value)


@pytest.mark.parametrize(("target", "expected"), [
    ("tests.support.callables:add", support.add),
    ("json:dumps", json.dumps),
    ("json:JSONDecoder", json.JSONDecoder),  # defined in json.decoder: inside `json`
    ("json:JSONDecoder.decode", json.JSONDecoder.decode),
])
def test_a_function_defined_in_an_allowed_module_resolves(target, expected):
    assert callables.resolve(target, ALLOWED) is expected


def test_nothing_is_allowed_without_prefixes():
    assert callables.check("json:dumps", ()) == (
        "'json:dumps' is not under an allowed prefix (none configured)")


@pytest.mark.parametrize("target", ["json:codecs.open", "json:codecs.sys.exit"])
def test_the_worker_refuses_before_calling_and_does_not_retry(target):
    outcome = python({"callable": target, "kwargs": {"status": 3}},
                     None,  # type: ignore[arg-type]  # refused before the context is read
                     EngineSettings(python_prefixes=("json",)))
    assert not outcome.ok and outcome.retriable is False
    assert outcome.error == (f"with.callable: {target!r} leaves the allowed modules:"
                             " json:codecs is a module (name a function defined in an"
                             " allowed module)")
