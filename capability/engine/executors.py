"""What each built-in task type does with its rendered ``with`` (DSL.md, "Built-in task
types"). An executor returns an ``Outcome``; raising means a retriable failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from capability import callables
from capability.dsl import TaskType, extensions, parse_duration, registry
from capability.egress import EgressRefused
from capability.egress import http as egress_http
from capability.engine import isolation
from capability.engine.settings import EngineSettings as Settings
from capability.engine.state import AttemptContext, Outcome

Executor = Callable[[dict[str, Any], AttemptContext, Settings], Outcome]
RETRIABLE_STATUS = {429} | set(range(500, 600))


def noop(params: dict[str, Any], ctx: AttemptContext, settings: Settings) -> Outcome:
    return Outcome.success(params.get("value"))


def fail(params: dict[str, Any], ctx: AttemptContext, settings: Settings) -> Outcome:
    # Retriable like any failure, so `fail` can exercise retries as well as compensation.
    return Outcome.failure(str(params.get("message") or "failed on purpose"))


def delay(params: dict[str, Any], ctx: AttemptContext, settings: Settings) -> Outcome:
    seconds = parse_duration(params.get("seconds", 0))
    if seconds < 0:
        return Outcome.failure("with.seconds: must not be negative", retriable=False)
    return Outcome(True, defer=seconds)


def transform(params: dict[str, Any], ctx: AttemptContext, settings: Settings) -> Outcome:
    if "jsonpath" in params:
        from jsonpath_ng.ext import parse as jsonpath

        try:
            expr = jsonpath(str(params["jsonpath"]))
        except Exception as exc:  # the library raises several types for bad syntax
            return Outcome.failure(f"with.jsonpath: {exc}", retriable=False)
        matches = [m.value for m in expr.find(params.get("input"))]
        return Outcome.success(matches[0] if len(matches) == 1 else matches)
    return Outcome.success(params.get("value"))


def python(params: dict[str, Any], ctx: AttemptContext, settings: Settings) -> Outcome:
    try:
        func = callables.resolve(str(params.get("callable", "")), settings.python_prefixes)
    except callables.CallableRefused as exc:
        return Outcome.failure(f"with.callable: {exc}", retriable=False)
    result = isolation.call(func, dict(params.get("kwargs") or {}), ctx.log,
                            settings.log_max_lines)
    if result.ok:
        return Outcome.success(result.output)
    return Outcome.failure(result.error or "failed", retriable=result.retriable)


def http(params: dict[str, Any], ctx: AttemptContext, settings: Settings) -> Outcome:
    import requests  # on first use: a worker that never calls out does not pay its ~4 MB

    headers = dict(params.get("headers") or {})
    # Receivers can drop repeats of the same attempt (execution is at-least-once).
    headers.setdefault("Idempotency-Key", ctx.attempt_id)
    auth = params.get("auth") or {}
    basic = None
    if auth.get("type") == "basic":
        basic = (str(auth.get("username", "")), str(auth.get("password", "")))
    elif auth.get("type") == "bearer":
        headers["Authorization"] = f"Bearer {auth.get('token', '')}"
    timeout = parse_duration(params["timeout"]) if params.get("timeout") else (
        ctx.timeout or settings.http_timeout
    )
    try:
        response = egress_http.request(
            settings.egress, str(params.get("method", "GET")).upper(), str(params["url"]),
            headers=headers, params=params.get("params"), json=params.get("json"),
            data=params.get("data"), auth=basic, timeout=timeout,
        )
    except EgressRefused as exc:
        return Outcome.failure(str(exc), retriable=False)
    except requests.Timeout:
        return Outcome.failure(f"HTTP request timed out after {timeout:g}s")
    except requests.RequestException as exc:
        return Outcome.failure(f"HTTP connection error: {type(exc).__name__}: {exc}")
    try:
        body_json = response.json()
    except ValueError:
        body_json = None
    output = {"status": response.status_code, "headers": dict(response.headers),
              "json": body_json, "text": response.text}
    expected = params.get("expect_status")
    if expected is None:
        good = 200 <= response.status_code < 300
    else:
        good = response.status_code in (expected if isinstance(expected, list) else [expected])
    if good:
        return Outcome.success(output)
    return Outcome(
        False, output=output, error=f"HTTP {response.status_code} from {params['url']}",
        retriable=response.status_code in RETRIABLE_STATUS,
    )


def approval(params: dict[str, Any], ctx: AttemptContext, settings: Settings) -> Outcome:
    # Rendered now and kept while it waits: what the page shows, who may answer.
    approvers = params.get("approvers")
    prompt = {"message": params.get("message"),
              "approvers": str(approvers) if approvers not in (None, "") else None}
    return Outcome(True, output=prompt, await_approval=True)


def agent(params: dict[str, Any], ctx: AttemptContext, settings: Settings) -> Outcome:
    # Rendered now and kept while it waits: what the agent is given (MCP workflow_next,
    # the run page) and what its output is checked against.
    prompt = {"instructions": params.get("instructions"), "inputs": params.get("inputs") or {},
              "output_schema": params.get("output_schema") or {},
              "model_hint": params.get("model_hint"), "checks": params.get("checks") or []}
    return Outcome(True, output=prompt, await_input=True)


def workflow(params: dict[str, Any], ctx: AttemptContext, settings: Settings) -> Outcome:
    return Outcome(True, start_child=params)


EXECUTORS: dict[str, Executor] = {
    "noop": noop, "fail": fail, "delay": delay, "transform": transform, "python": python,
    "http": http, "approval": approval, "workflow": workflow, "agent": agent,
}


def register_task_type(task_type: TaskType, executor: Executor, *,
                       replace: bool = False) -> None:
    """Add a task type in one call: its ``with`` model to the DSL's registry (validation,
    the JSON Schema, the editor's list, the worker's check of rendered values) and its
    executor here. All or nothing: a bad name, model or executor, or a name already
    taken (without ``replace``), raises and changes neither."""
    if not callable(executor):
        raise TypeError(f"task type {task_type.name!r}: the executor must be callable")
    if not replace and task_type.name in EXECUTORS:
        raise ValueError(f"task type {task_type.name!r} is already registered")
    registry.register(task_type, replace=replace)  # checks the name and model, or raises
    EXECUTORS[task_type.name] = executor


# Types that join when the executors are first used (connectors: ``dsl.extensions``).
extensions.run_pending()
