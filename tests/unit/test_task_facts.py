"""The reaper reads a task's type and timeout from the stored definition (JSON), without
the DSL's models: what it reads must be what the engine runs with."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from capability import dsl
from capability.engine import compensation
from capability.engine.decide import plan_of
from capability.engine.reaper import task_facts


def _definition(defaults: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "name": "facts", **({"defaults": defaults} if defaults is not None else {}),
        "tasks": [
            {"id": "plain", "type": "noop"},
            {"id": "seconds", "type": "delay", "with": {"seconds": 1}, "timeout": 12},
            {"id": "minutes", "type": "noop", "timeout": "5m",
             "compensate": {"type": "transform", "with": {"value": 1}}},
            {"id": "undo_default", "type": "noop", "depends_on": ["plain"],
             "compensate": {"type": "fail", "with": {"message": "x"}}},
            {"id": "hours", "type": "python", "timeout": "1h",
             "with": {"callable": "tests.support.callables:add", "kwargs": {"a": 1, "b": 2}}},
        ],
    }


def _engine_view(definition: dict[str, Any]) -> dict[str, tuple[str, str | None, float | None]]:
    result = dsl.validate_definition(definition)
    assert result.definition is not None, result.errors
    model = result.definition
    plan = plan_of(model)
    seen: dict[str, tuple[str, str | None, float | None]] = {}
    for task_id, spec in plan.specs.items():
        undo = None
        if spec.compensate is not None:
            row = SimpleNamespace(task_id=task_id, kind=compensation.KIND)
            undo_spec = compensation.spec_for(model, row)  # type: ignore[arg-type]
            undo = undo_spec.type
            assert dsl.effective_timeout(undo_spec, model.defaults) == \
                dsl.effective_timeout(spec, model.defaults)
        seen[task_id] = (spec.type, undo, dsl.effective_timeout(spec, model.defaults))
    return seen


def test_facts_match_the_engine_with_and_without_a_default_timeout():
    for defaults in (None, {}, {"timeout": "45s"}, {"timeout": 7, "queue": "low"}):
        definition = _definition(defaults)
        assert task_facts(definition) == _engine_view(definition), defaults


def test_an_empty_definition_has_no_facts():
    assert task_facts({}) == {}
