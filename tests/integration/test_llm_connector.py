"""``llm`` against an OpenAI-compatible endpoint played by pytest-httpserver with the
shapes of real chat-completions replies: the request it receives, structured output
validated against response_schema (an invalid reply retried with the reasons), token
usage priced with LLM_PRICES and summed on the run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.support import pages
from tests.support.engine import drain
from tests.support.runs import run_to_end

API_KEY = "sk-SECRET-llm-key-5d4c"
SCHEMA = {"type": "object", "required": ["category"], "additionalProperties": False,
          "properties": {"category": {"enum": ["bug", "question"]}}}


def completion(content: str, prompt: int = 42, completion_tokens: int = 7) -> dict[str, Any]:
    return {"id": "chatcmpl-abc123", "object": "chat.completion", "created": 1733500000,
            "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_0ba0d124f1",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content,
                                     "refusal": None}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                      "total_tokens": prompt + completion_tokens}}


@pytest.fixture()
def priced(app: Flask) -> Iterator[None]:
    app.config["LLM_PRICES"] = json.dumps({"gpt-4o-mini-2024-07-18": {
        "prompt": 0.15, "completion": 0.6}})
    yield
    app.config["LLM_PRICES"] = "{}"


def _connection(client: FlaskClient, op: dict[str, Any], httpserver: HTTPServer) -> None:
    r = client.post("/api/v1/connections/", headers=op["h"], json={
        "team": op["team"]["name"], "name": "models", "type": "openai",
        "config": {"base_url": httpserver.url_for("/v1"), "model": "gpt-4o-mini"},
        "secret": {"api_key": API_KEY}})
    assert r.status_code == 201, r.get_json()
    httpserver.expect_request("/v1/models").respond_with_json(
        {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})
    tested = client.post(f"/api/v1/connections/{r.get_json()['id']}/test", headers=op["h"])
    assert tested.get_json()["ok"] is True, tested.get_json()


def test_a_prompt_its_usage_and_its_cost(app: Flask, client: FlaskClient, op: dict[str, Any],
                                         httpserver: HTTPServer, priced: None,
                                         factory: Any) -> None:
    _connection(client, op, httpserver)
    seen: list[dict[str, Any]] = []

    def answer(request: Request) -> Response:
        seen.append({"auth": request.headers.get("Authorization"), **request.get_json()})
        return Response(json.dumps(completion("Paris.")), content_type="application/json")

    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(answer)
    run = run_to_end(app, client, op, [{"id": "ask", "type": "llm", "with": {
        "connection": "models", "system": "Answer in one word.",
        "prompt": "Capital of France?", "temperature": 0}}])
    out = run["by_task"]["ask"]["output"]
    assert out["text"] == "Paris." and out["model"] == "gpt-4o-mini-2024-07-18"
    assert out["usage"] == {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
    assert out["cost"] == pytest.approx((42 * 0.15 + 7 * 0.6) / 1000)
    assert run["cost"] == out["cost"]
    # The workflow sums its runs' costs.
    again = client.post(f"/api/v1/workflows/{run['workflow_id']}/runs", headers=op["h"], json={})
    assert drain(app, again.get_json()["id"]) == "succeeded"
    workflow = client.get(f"/api/v1/workflows/{run['workflow_id']}", headers=op["h"])
    assert workflow.get_json()["result"]["cost"] == pytest.approx(2 * out["cost"])
    # The run's and the workflow's pages say so too, to a Viewer of the team.
    viewer = pages.login(app, factory.user("Viewer", teams=[op["team"]]))
    run_page = viewer.get(f"/runs/{run['id']}").get_data(as_text=True)
    assert f'id="run-cost">{out["cost"]:,.6f}' in run_page
    workflow_page = viewer.get(f"/workflows/{run['workflow_id']}").get_data(as_text=True)
    assert f'id="workflow-cost">{2 * out["cost"]:,.6f}' in workflow_page
    seen.pop()
    [request] = seen
    assert request["auth"] == f"Bearer {API_KEY}" and request["model"] == "gpt-4o-mini"
    assert request["messages"] == [{"role": "system", "content": "Answer in one word."},
                                   {"role": "user", "content": "Capital of France?"}]
    assert request["temperature"] == 0


def test_an_invalid_structured_reply_is_retried_with_the_reasons(
        app: Flask, client: FlaskClient, op: dict[str, Any], httpserver: HTTPServer,
        priced: None) -> None:
    _connection(client, op, httpserver)
    replies = iter([json.dumps({"category": "other", "mood": "sad"}),
                    json.dumps({"category": "bug"}), json.dumps({"category": "question"})])
    bodies: list[dict[str, Any]] = []

    def answer(request: Request) -> Response:
        bodies.append(request.get_json())
        return Response(json.dumps(completion(next(replies), 30, 5)),
                        content_type="application/json")

    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(answer)
    run = run_to_end(app, client, op, [{
        "id": "classify", "type": "llm", "retry": {"max_attempts": 2, "delay": "50ms",
                                                   "jitter": False},
        "with": {"connection": "models", "prompt": "The app crashes on save.",
                 "response_schema": SCHEMA}}, {
        "id": "second", "type": "llm", "depends_on": ["classify"],
        "with": {"connection": "models", "messages": [
            {"role": "user", "content": "{{ tasks.classify.output.json.category }}"}],
            "response_schema": SCHEMA}}])
    task = run["by_task"]["classify"]
    assert task["status"] == "succeeded" and task["attempts"] == 2
    assert task["output"]["json"] == {"category": "bug"}
    assert bodies[0]["response_format"]["json_schema"]["schema"] == SCHEMA
    # The first attempt's error says why, every violation with its path.
    first = next(a["error"] for a in task["attempt_history"] if a["number"] == 1)
    assert "does not match response_schema" in first
    assert "$.category: 'other' is not one of ['bug', 'question']" in first
    assert "Additional properties are not allowed ('mood' was unexpected)" in first
    assert bodies[2]["messages"] == [{"role": "user", "content": "bug"}]


def test_http_errors_are_classed_and_the_key_never_shown(app: Flask, client: FlaskClient,
                                                         op: dict[str, Any],
                                                         httpserver: HTTPServer) -> None:
    _connection(client, op, httpserver)
    httpserver.expect_request("/v1/chat/completions", method="POST",
                              json={"model": "busy", "messages": [
                                  {"role": "user", "content": "x"}]}).respond_with_json(
        {"error": {"message": "Rate limit reached", "type": "requests"}}, status=429)
    httpserver.expect_request("/v1/chat/completions", method="POST",
                              json={"model": "denied", "messages": [
                                  {"role": "user", "content": "x"}]}).respond_with_json(
        {"error": {"message": f"Incorrect API key provided: {API_KEY}"}}, status=401)
    run = run_to_end(app, client, op, [
        {"id": "busy", "type": "llm", "retry": {"max_attempts": 2, "delay": "50ms"},
         "with": {"connection": "models", "model": "busy", "prompt": "x"}},
        {"id": "denied", "type": "llm", "retry": {"max_attempts": 2, "delay": "50ms"},
         "with": {"connection": "models", "model": "denied", "prompt": "x"}}])
    busy, denied = run["by_task"]["busy"], run["by_task"]["denied"]
    assert busy["attempts"] == 2 and "HTTP 429: Rate limit reached" in busy["error"]
    assert denied["attempts"] == 1 and denied["error"] == (
        "llm: HTTP 401: Incorrect API key provided: ***")
    assert run["cost"] is None
