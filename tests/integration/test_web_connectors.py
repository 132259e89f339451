"""``webhook``, ``slack`` and ``teams`` against a real HTTP peer (pytest-httpserver) that
checks what it receives: signatures (verified with the webhooks' own verifier),
authentication from an ``http`` connection, the bodies Slack and Teams expect; 5xx
retried, 4xx not; secret URLs and tokens masked in errors."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from capability.triggers import signatures
from tests.support.app import Factory, api_token, auth
from tests.support.runs import run_to_end

HOOK_SECRET = "whsec_" + base64.b64encode(b"a-32-byte-standard-webhooks-key!").decode()
TOKEN = "xoxb-SECRET-bot-token-9f8e"


def _secret(client: FlaskClient, factory: Factory, op: dict[str, Any], name: str,
            value: str) -> None:
    admin = auth(api_token(client, factory.user("Admin")["username"]))
    r = client.post("/api/v1/secrets/", headers=admin, json={
        "team": op["team"]["name"], "name": name, "value": value})
    assert r.status_code == 201, r.get_json()


def _connection(client: FlaskClient, op: dict[str, Any], **body: Any) -> None:
    r = client.post("/api/v1/connections/", headers=op["h"],
                    json={"team": op["team"]["name"], **body})
    assert r.status_code == 201, r.get_json()


def test_a_signed_webhook_verifies_at_the_receiver(app: Flask, client: FlaskClient,
                                                   factory: Factory, op: dict[str, Any],
                                                   httpserver: HTTPServer) -> None:
    _secret(client, factory, op, "hook", HOOK_SECRET)
    seen: list[dict[str, Any]] = []

    def receive(request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        problem = signatures.verify(signatures.Scheme("standard-webhooks", HOOK_SECRET),
                                    headers, request.get_data(), dt.datetime.now(dt.UTC))
        seen.append({"problem": problem, "body": request.get_json(),
                     "idempotency": headers.get("idempotency-key")})
        return Response(json.dumps({"received": True}), status=200,
                        content_type="application/json")

    httpserver.expect_request("/orders", method="POST").respond_with_handler(receive)
    run = run_to_end(app, client, op, [{"id": "tell", "type": "webhook", "with": {
        "url": httpserver.url_for("/orders"), "json": {"order": 7},
        "signing": {"scheme": "standard-webhooks", "secret": "{{ secrets.hook }}"}}}])
    assert run["status"] == "succeeded", run["by_task"]["tell"]
    assert run["by_task"]["tell"]["output"] == {"status": 200, "json": {"received": True}}
    [got] = seen
    assert got["problem"] is None and got["body"] == {"order": 7} and got["idempotency"]


def test_a_webhook_through_an_http_connection(app: Flask, client: FlaskClient,
                                              op: dict[str, Any],
                                              httpserver: HTTPServer) -> None:
    _connection(client, op, name="api", type="http",
                config={"base_url": httpserver.url_for("/v1"), "auth": "bearer",
                        "headers": {"X-Team": "data"}},
                secret={"token": TOKEN})
    httpserver.expect_request("/v1/events", method="POST", headers={
        "Authorization": f"Bearer {TOKEN}", "X-Team": "data"}).respond_with_json({"id": 1})
    httpserver.expect_request("/v1/down", method="POST").respond_with_data("busy", status=503)
    httpserver.expect_request("/v1/bad", method="POST").respond_with_data("no", status=400)
    run = run_to_end(app, client, op, [
        {"id": "ok", "type": "webhook", "with": {
            "connection": "api", "url": "events", "json": {"a": 1},
            "signing": {"scheme": "hmac-sha256", "secret": "k"}}},
        {"id": "down", "type": "webhook", "retry": {"max_attempts": 2, "delay": "50ms"},
         "with": {"connection": "api", "url": "/down", "json": {}}},
        {"id": "bad", "type": "webhook", "retry": {"max_attempts": 2, "delay": "50ms"},
         "with": {"connection": "api", "url": "/bad", "json": {}}},
    ])
    tasks = run["by_task"]
    assert tasks["ok"]["output"] == {"status": 200, "json": {"id": 1}}
    assert tasks["down"]["attempts"] == 2 and "HTTP 503" in tasks["down"]["error"]
    assert tasks["bad"]["attempts"] == 1 and "HTTP 400" in tasks["bad"]["error"]
    assert TOKEN not in json.dumps(run)


def test_slack_by_webhook_and_by_bot_token(app: Flask, client: FlaskClient,
                                           op: dict[str, Any], httpserver: HTTPServer) -> None:
    _connection(client, op, name="hook", type="slack",
                secret={"webhook_url": httpserver.url_for("/services/T0/B0/SECRETPATH")})
    _connection(client, op, name="bot", type="slack",
                config={"channel": "#ops", "api_url": httpserver.url_for("/api")},
                secret={"token": TOKEN})
    _connection(client, op, name="gone", type="slack",
                secret={"webhook_url": "http://127.0.0.1:1/services/T0/B0/GONESECRET"})
    httpserver.expect_request("/services/T0/B0/SECRETPATH", method="POST",
                              json={"text": "done"}).respond_with_data("ok")
    httpserver.expect_request("/api/chat.postMessage", method="POST", headers={
        "Authorization": f"Bearer {TOKEN}"}, json={"text": "hi", "channel": "#ops"},
    ).respond_with_json({"ok": True, "ts": "1700000000.0001"})
    httpserver.expect_request("/api/chat.postMessage", method="POST", json={
        "text": "hi", "channel": "#nowhere"}).respond_with_json(
        {"ok": False, "error": "channel_not_found"})
    httpserver.expect_request("/api/chat.postMessage", method="POST", json={
        "text": "hi", "channel": "#echo"}).respond_with_json(
        {"ok": False, "error": f"token {TOKEN} is not allowed here"})
    run = run_to_end(app, client, op, [
        {"id": "hook", "type": "slack", "with": {"connection": "hook", "text": "done"}},
        {"id": "bot", "type": "slack", "with": {"connection": "bot", "text": "hi"}},
        {"id": "lost", "type": "slack", "with": {"connection": "bot", "text": "hi",
                                                 "channel": "#nowhere"}},
        {"id": "gone", "type": "slack", "with": {"connection": "gone", "text": "x"}},
        {"id": "echo", "type": "slack", "with": {"connection": "bot", "text": "hi",
                                                 "channel": "#echo"}},
    ])
    tasks = run["by_task"]
    assert tasks["hook"]["output"] == {"ok": True}
    assert tasks["bot"]["output"] == {"ok": True, "ts": "1700000000.0001"}
    assert tasks["lost"]["error"] == "slack chat.postMessage: channel_not_found"
    assert tasks["gone"]["status"] == "failed" and "refused" in tasks["gone"]["error"]
    assert "GONESECRET" not in tasks["gone"]["error"]
    # The connection's secret, echoed by the peer, is masked in the error.
    assert tasks["echo"]["error"] == "slack chat.postMessage: token *** is not allowed here"


def test_teams_text_and_card(app: Flask, client: FlaskClient, op: dict[str, Any],
                             httpserver: HTTPServer) -> None:
    _connection(client, op, name="ops", type="teams",
                secret={"webhook_url": httpserver.url_for("/teams/hook")})
    card = {"type": "AdaptiveCard", "version": "1.4",
            "body": [{"type": "TextBlock", "text": "Nightly load done"}]}
    httpserver.expect_request("/teams/hook", method="POST", json={"text": "plain"}
                              ).respond_with_data("1")
    httpserver.expect_request("/teams/hook", method="POST", json={
        "type": "message", "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive", "content": card}]}
    ).respond_with_data("1")
    run = run_to_end(app, client, op, [
        {"id": "text", "type": "teams", "with": {"connection": "ops", "text": "plain"}},
        {"id": "card", "type": "teams", "with": {"connection": "ops", "card": card}}])
    assert run["status"] == "succeeded", {k: v.get("error") for k, v in run["by_task"].items()}
    r = client.post("/api/v1/workflows/validate", headers=op["h"], json={"definition": {
        "name": "t", "tasks": [{"id": "a", "type": "teams", "with": {"connection": "ops"}}]}})
    assert "give text or card" in str(r.get_json()["errors"])
