"""One task run on a worker without a run (CONNECTORS.md, "Testing a step").

The RQ entry point ``run_test`` (its import path is stored in Redis: fixed) gets what
``capability.steps.service`` checked: the workflow version, the task, the params with
their defaults, the upstream outputs to pretend, the team. It runs the task the way an
attempt runs (``jobs.execute``: templates rendered under the expression budget, the
type's executor under the task's timeout, secrets masked, the output capped), with a
scope made of those values instead of a run's, and writes nothing to the database: no
run, no attempt, no log row. What comes back is the result the web returns.
"""

from __future__ import annotations

import time
from typing import Any

from flask import current_app

from app.extensions import db
from app.ids import new_id
from capability import dsl
from capability.engine import masking, state, tasklog
from capability.engine.dispatch import dispatcher_for
from capability.engine.state import AttemptContext, Outcome

# The types a test cannot run alone: each needs a run (an answer, a child run).
NEEDS_A_RUN = frozenset({"approval", "workflow", "agent"})


def scope_of(request: dict[str, Any], secrets: Any) -> dict[str, Any]:
    upstream = request.get("upstream") or {}
    return {
        "params": request.get("params") or {},
        "tasks": {task_id: {"output": (value or {}).get("output"), "status": "succeeded",
                            "error": None} for task_id, value in upstream.items()},
        "run": {"id": request["test_id"], "trigger": "test", "scheduled_for": None},
        "trigger": {"payload": request.get("payload")},
        "secrets": secrets,
    }


def _result(outcome: Outcome, log: tasklog.Writer, began: float) -> dict[str, Any]:
    if outcome.skipped is not None:
        status = "skipped"
    elif outcome.defer is not None:
        status = "succeeded"
        log.write("info", f"a delay of {outcome.defer:g}s: a run would wait here")
    else:
        status = "succeeded" if outcome.ok else "failed"
    return {"status": status, "output": outcome.output, "error": outcome.error,
            "retriable": outcome.retriable if not outcome.ok else None,
            "logs": log.lines, "logs_truncated": log.truncated,
            "took_ms": round((time.monotonic() - began) * 1000, 1)}


def run_test(request: dict[str, Any]) -> dict[str, Any]:
    """RQ job: run task ``request["task_id"]`` of version ``request["version_id"]`` with
    ``params`` and ``upstream`` outputs, for team ``team_id``; the result."""
    began = time.monotonic()
    settings = dispatcher_for(current_app).settings
    try:
        definition = state.definition_for_version(db.session, request["version_id"])
        spec = next(t for t in definition.tasks if t.id == request["task_id"])
        secrets = masking.secret_values(db.session, request["team_id"], None, settings)
    finally:
        db.session.remove()  # no transaction while the task runs
    scope = scope_of(request, secrets)
    ctx = AttemptContext(
        attempt_id=request["test_id"], number=1, run_id="", task=spec, definition=definition,
        scope=scope, timeout=dsl.effective_timeout(spec, definition.defaults),
        team_id=request["team_id"])
    ctx.log = tasklog.Writer(ctx.attempt_id, settings.log_max_lines,
                             lambda message: masking.text(message, scope) or "")
    outcome = _run(ctx, spec, request, settings)
    return _result(outcome, ctx.log, began)


def _run(ctx: AttemptContext, spec: dsl.TaskSpec, request: dict[str, Any],
         settings: Any) -> Outcome:
    from capability.engine import jobs  # the worker's: its import pulls in RQ's side

    budget = settings.expression_budget
    log = ctx.log
    assert log is not None
    if spec.when is not None:
        try:
            go = dsl.evaluate_condition(str(spec.when), ctx.scope, path="when", budget=budget)
        except dsl.ExpressionError as exc:
            return Outcome.failure(str(exc), retriable=False)
        if not go:
            log.write("info", "when is false: a run would skip this task")
            return Outcome.skip(f"when was false: {spec.when}")
    if spec.for_each is not None:
        if "item" in request:
            item = request["item"]
        else:
            try:
                items = dsl.evaluate_items(spec.for_each, ctx.scope, budget=budget)
            except dsl.ExpressionError as exc:
                return Outcome.failure(str(exc), retriable=False)
            if not items:
                log.write("info", "for_each is empty: a run would have no element to run")
                return Outcome.skip("for_each is empty")
            item = items[0]
            log.write("info", f"for_each: {len(items)} elements; tested with the first")
        ctx.scope = {**ctx.scope, "item": item, "index": 0}
    return jobs.execute(ctx, settings)


def new_test_id() -> str:
    return f"test-{new_id()}"
