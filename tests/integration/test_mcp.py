"""The MCP server (AGENTS.md, "MCP server") through its HTTP endpoint in process: keys,
scopes, row scope, JSON-RPC errors, the audit trail. The SDK's client against a real
`flask --app app up` and over stdio is in test_mcp_clients.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.extensions import db
from tests.support.app import Factory, unique
from tests.support.mcp import make_key, revoke, set_role

HEADERS = {"Accept": "application/json, text/event-stream",
           "Content-Type": "application/json"}


def rpc(client: FlaskClient, token: str | None, method: str,
        params: dict[str, Any] | None = None, raw: str | None = None) -> tuple[int, Any]:
    headers = dict(HEADERS)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = raw if raw is not None else json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}})
    response = client.post("/mcp", data=body, headers=headers)
    return response.status_code, response.get_json(silent=True)


def call(client: FlaskClient, token: str, tool: str, **arguments: Any) -> Any:
    status, body = rpc(client, token, "tools/call", {"name": tool, "arguments": arguments})
    assert status == 200, body
    return body


def result(body: Any) -> Any:
    assert "error" not in body, body
    assert body["result"]["isError"] is False, body
    return body["result"]["structuredContent"]


def error(body: Any) -> dict[str, Any]:
    assert "error" in body, body
    return dict(body["error"])


WORKFLOW = """name: {name}
description: adds two numbers
params:
  a: {{type: integer, required: true}}
tasks:
  - id: add
    type: python
    with:
      callable: tests.support.callables:add
      kwargs: {{a: "{{{{ params.a }}}}", b: 2}}
"""


@pytest.fixture()
def team(factory: Factory) -> dict[str, Any]:
    return factory.team()


@pytest.fixture()
def author(factory: Factory, team: dict[str, Any]) -> dict[str, Any]:
    return factory.user("Author", [team])


def test_every_call_needs_a_valid_key_and_says_nothing_about_which_exist(
        app: Flask, client: FlaskClient, author: dict[str, Any]) -> None:
    key_id, token = make_key(app, author["id"], ["read"])
    status, body = rpc(client, None, "tools/list")
    assert status == 401 and "API key" in body["message"]
    prefix = token.split("_")[1]
    unknown = rpc(client, "apk_zzzzzzzz_" + "x" * 30, "tools/list")
    wrong_secret = rpc(client, f"apk_{prefix}_" + "x" * 30, "tools/list")
    assert unknown[0] == wrong_secret[0] == 401
    assert unknown[1] == wrong_secret[1]  # an existing prefix is not told apart
    status, body = rpc(client, token, "tools/list")
    assert status == 200
    names = {t["name"] for t in body["result"]["tools"]}
    assert {"workflow_list", "workflow_get", "workflow_validate", "workflow_save", "run_start",
            "run_status", "run_cancel", "approval_answer"} <= names
    for listed in body["result"]["tools"]:
        assert listed["inputSchema"]["type"] == "object"
        assert listed["outputSchema"]["type"] == "object"
    # Revoked: refused at the next request, whatever it is.
    revoke(app, key_id)
    status, body = rpc(client, token, "tools/call", {"name": "workflow_list", "arguments": {}})
    assert status == 401 and body["message"].endswith("revoked")
    with app.app_context():
        denied = db.session.execute(select(AuditEvent).where(
            AuditEvent.action == "api_key_use", AuditEvent.target_id == key_id)).scalars().all()
        assert [e.outcome for e in denied] == ["denied"]
        db.session.remove()


def test_malformed_requests_unknown_tools_and_bad_arguments_are_json_rpc_errors(
        app: Flask, client: FlaskClient, author: dict[str, Any]) -> None:
    _, token = make_key(app, author["id"], ["read"])
    status, body = rpc(client, token, "", raw="{not json")
    assert status == 400 and body["error"]["code"] == -32700
    status, body = rpc(client, token, "", raw=json.dumps({"jsonrpc": "2.0", "id": 1}))
    assert status < 500 and body["error"]["code"] in (-32600, -32601, -32602)
    status, body = rpc(client, token, "no/such/method")
    assert status < 500 and body["error"]["code"] == -32601
    err = error(call(client, token, "no_such_tool"))
    assert err["code"] == -32602 and "no_such_tool" in err["message"]
    err = error(call(client, token, "workflow_get", workflow=12, extra=True))
    assert err["code"] == -32602
    paths = {e["path"] for e in err["data"]["errors"]}
    assert paths == {"workflow", "extra"}
    status, body = rpc(client, token, "tools/call", {"name": "run_status"})
    assert status < 500 and "error" in body


def test_validate_reports_lines_save_creates_then_versions_and_is_audited(
        app: Flask, client: FlaskClient, team: dict[str, Any], author: dict[str, Any]) -> None:
    _, token = make_key(app, author["id"], ["read", "author"])
    name = unique("wf")
    broken = WORKFLOW.format(name=name).replace("type: python", "type: python\n    retires: 3")
    verdict = result(call(client, token, "workflow_validate", definition=broken))
    assert verdict["valid"] is False
    assert verdict["errors"] == [{"path": "tasks[0].retires", "message": "unknown field",
                                  "line": 8}]
    err = error(call(client, token, "workflow_save", team=team["name"], definition=broken))
    assert err["code"] == -32002 and err["data"]["errors"][0]["line"] == 8
    ok = result(call(client, token, "workflow_validate", definition=WORKFLOW.format(name=name)))
    assert ok == {"valid": True, "errors": []}

    saved = result(call(client, token, "workflow_save", team=team["name"],
                        definition=WORKFLOW.format(name=name)))
    assert saved["created"] is True and saved["version"] == 1
    again = result(call(client, token, "workflow_save", team=team["name"],
                        definition=WORKFLOW.format(name=name).replace("adds", "sums")))
    assert again["created"] is False and again["version"] == 2 and again["id"] == saved["id"]
    got = result(call(client, token, "workflow_get", workflow=name))
    assert got["description"] == "sums two numbers" and got["version"] == 2
    assert got["params_schema"]["required"] == ["a"]
    assert got["triggers"] == {"schedules": [], "webhooks": [], "events": []}
    listed = result(call(client, token, "workflow_list", query=name))
    assert [w["id"] for w in listed["workflows"]] == [saved["id"]]
    assert listed["workflows"][0]["params"] == {"a": {"type": "integer", "required": True}}
    with app.app_context():
        events = db.session.execute(select(AuditEvent).where(
            AuditEvent.target_id == saved["id"]).order_by(AuditEvent.id)).scalars().all()
        assert [(e.action, e.via, e.actor) for e in events] == [
            ("create", "mcp:workflow_save", author["username"]),
            ("update", "mcp:workflow_save", author["username"])]
        db.session.remove()


def test_scopes_roles_and_teams_narrow_every_call(
        app: Flask, client: FlaskClient, factory: Factory, team: dict[str, Any],
        author: dict[str, Any]) -> None:
    _, writer = make_key(app, author["id"], ["read", "run", "author"])
    name = unique("wf")
    saved = result(call(client, writer, "workflow_save", team=team["name"],
                        definition=WORKFLOW.format(name=name)))
    _, reader = make_key(app, author["id"], ["read"])
    err = error(call(client, reader, "run_start", workflow=name, params={"a": 1}))
    assert err["code"] == -32003 and "'run'" in err["message"]
    err = error(call(client, reader, "workflow_save", team=team["name"],
                     definition=WORKFLOW.format(name=name)))
    assert err["code"] == -32003
    with app.app_context():
        denied = db.session.execute(select(AuditEvent).where(
            AuditEvent.action == "mcp:run_start", AuditEvent.outcome == "denied",
            AuditEvent.actor == author["username"])).scalars().all()
        assert len(denied) == 1
        db.session.remove()
    # The user's roles now decide too: demoted to Viewer, the key's scopes no longer
    # reach saving or starting.
    demoted = factory.user("Author", [team])
    _, demoted_key = make_key(app, demoted["id"], ["read", "run", "author"])
    set_role(app, demoted["id"], "Viewer")
    err = error(call(client, demoted_key, "run_start", workflow=name, params={"a": 1}))
    assert err["code"] == -32003
    err = error(call(client, demoted_key, "workflow_save", team=team["name"],
                     definition=WORKFLOW.format(name=name)))
    assert err["code"] == -32003
    assert result(call(client, demoted_key, "workflow_get", workflow=name))["name"] == name
    # Another team's workflow does not exist for this caller, by id or by name.
    other_team = factory.team()
    outsider = factory.user("Author", [other_team])
    _, outsider_key = make_key(app, outsider["id"], ["read", "run", "author"])
    for ref in (saved["id"], name, f"{team['name']}/{name}"):
        err = error(call(client, outsider_key, "workflow_get", workflow=ref))
        assert err["code"] == -32001, ref
        err = error(call(client, outsider_key, "run_start", workflow=ref))
        assert err["code"] == -32001, ref
    assert result(call(client, outsider_key, "workflow_list", query=name))["workflows"] == []
    # Bad params: -32002 with every error.
    err = error(call(client, writer, "run_start", workflow=name, params={"a": "x", "b": 1}))
    assert err["code"] == -32002 and len(err["data"]["errors"]) == 2
    started = result(call(client, writer, "run_start", workflow=saved["id"], params={"a": 1},
                          idempotency_key="k1"))
    assert started["created"] is True and started["status"] in ("queued", "running")
    same = result(call(client, writer, "run_start", workflow=name, params={"a": 1},
                       idempotency_key="k1"))
    assert same["run_id"] == started["run_id"] and same["created"] is False
    err = error(call(client, outsider_key, "run_status", run_id=started["run_id"]))
    assert err["code"] == -32001
    status = result(call(client, reader, "run_status", run_id=started["run_id"]))
    assert status["progress"] == {"done": 0, "total": 1}
    assert status["tasks"][0]["task_id"] == "add"
    cancelled = result(call(client, writer, "run_cancel", run_id=started["run_id"]))
    assert cancelled["status"] == "cancelled"
    err = error(call(client, writer, "run_cancel", run_id=started["run_id"]))
    assert err["code"] == -32002


def test_workflow_list_pages_with_a_cursor_and_filters_by_team(
        app: Flask, client: FlaskClient, team: dict[str, Any], author: dict[str, Any]) -> None:
    _, token = make_key(app, author["id"], ["read", "author"])
    stem = unique("page")
    for i in range(53):
        result(call(client, token, "workflow_save", team=team["name"], definition={
            "name": f"{stem}-{i:02d}", "tasks": [{"id": "a", "type": "noop"}]}))
    first = result(call(client, token, "workflow_list", query=stem, team=team["name"]))
    assert len(first["workflows"]) == 50 and first["next_cursor"]
    second = result(call(client, token, "workflow_list", query=stem,
                         cursor=first["next_cursor"]))
    assert [w["name"] for w in second["workflows"]] == [f"{stem}-{i}" for i in (50, 51, 52)]
    assert second["next_cursor"] is None
    err = error(call(client, token, "workflow_list", cursor="garbage"))
    assert err["code"] == -32002 and err["data"]["errors"][0]["path"] == "cursor"


def test_templates_are_listed_and_used_into_a_team(
        app: Flask, client: FlaskClient, team: dict[str, Any], author: dict[str, Any]) -> None:
    _, reader = make_key(app, author["id"], ["read"])
    _, token = make_key(app, author["id"], ["read", "author"])
    everything = result(call(client, reader, "template_list"))["templates"]
    assert len(everything) >= 20
    chosen = everything[0]
    found = result(call(client, reader, "template_list", category=chosen["category"],
                        search=chosen["slug"]))["templates"]
    assert [t["slug"] for t in found] == [chosen["slug"]]
    err = error(call(client, reader, "template_use", slug=chosen["slug"], team=team["name"]))
    assert err["code"] == -32003
    name = unique("from-template")
    made = result(call(client, token, "template_use", slug=chosen["slug"], team=team["name"],
                       name=name))
    assert made["name"] == name and made["version"] == 1 and made["template"] == chosen["slug"]
    err = error(call(client, token, "template_use", slug="no-such-template", team=team["name"]))
    assert err["code"] == -32001
    with app.app_context():
        event = db.session.execute(select(AuditEvent).where(
            AuditEvent.target_id == made["id"])).scalar_one()
        assert (event.action, event.via) == ("create", "mcp:template_use")
        db.session.remove()
