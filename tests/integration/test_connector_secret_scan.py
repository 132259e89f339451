"""No connection secret in clear anywhere (issue 13, item 7): every connector here runs
with a recognisable secret, its peer echoing that secret back where it can (a reply
body, an error message), then everything the product keeps or says is scanned: API
responses (runs, tasks, connections, audit), every stored output and error, the audit
trail, and every log line written meanwhile."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from app.extensions import db
from tests.support.app import LOOPBACK_PEERS, Factory, api_token, auth
from tests.support.runs import run_to_end

MARK = "SCAN-SECRET-7e3f1a"
# An OAuth2 access token: no stored secret, obtained at run time, masked all the same.
ACCESS = "SCAN-ACCESS-TOKEN-2c9d"


@pytest.fixture()
def egress(app: Flask) -> Iterator[None]:
    before = app.config["EGRESS_ALLOW"]
    app.config["EGRESS_ALLOW"] = f"{LOOPBACK_PEERS} 127.0.0.1:5432 127.0.0.1:6379"
    yield
    app.config["EGRESS_ALLOW"] = before


@pytest.fixture()
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _echo(request: Request) -> Response:
    """A peer that says back what it was sent: headers, path and body."""
    said = {"headers": dict(request.headers), "path": request.path,
            "body": request.get_data(as_text=True)}
    status = 401 if "fail" in request.path else 200
    return Response(json.dumps({"ok": status == 200, "echo": said,
                                "error": {"message": f"rejected {said}"}}),
                    status=status, content_type="application/json")


def test_no_secret_in_clear_anywhere(app: Flask, client: FlaskClient, factory: Factory,
                                     op: dict[str, Any], httpserver: HTTPServer,
                                     s3_endpoint: str, egress: None,
                                     caplog: pytest.LogCaptureFixture) -> None:
    httpserver.expect_request(f"/hook/{MARK}").respond_with_handler(_echo)
    httpserver.expect_request(f"/hook/{MARK}/fail").respond_with_handler(_echo)
    httpserver.expect_request("/api/events").respond_with_handler(_echo)
    httpserver.expect_request("/api/events/fail").respond_with_handler(_echo)
    httpserver.expect_request("/oauth/token", method="POST").respond_with_json(
        {"access_token": ACCESS, "token_type": "bearer", "expires_in": 3600})
    httpserver.expect_request("/v1/chat/completions").respond_with_handler(_echo)
    team = op["team"]["name"]
    connections = [
        {"name": "pg", "type": "postgres", "config": {
            "host": "127.0.0.1", "database": "postgres", "username": "postgres"},
         "secret": {"password": MARK}},
        {"name": "cache", "type": "redis", "config": {"url": "redis://127.0.0.1:6379/14"},
         "secret": {"password": MARK}},
        {"name": "api", "type": "http", "config": {
            "base_url": httpserver.url_for("/api"), "auth": "bearer"},
         "secret": {"token": MARK}},
        {"name": "oauth", "type": "http", "config": {
            "base_url": httpserver.url_for("/api"), "auth": "oauth2_client_credentials",
            "token_url": httpserver.url_for("/oauth/token"), "client_id": "scan"},
         "secret": {"client_secret": MARK}},
        {"name": "chat", "type": "slack", "config": {"api_url": httpserver.url_for("/api")},
         "secret": {"token": MARK}},
        {"name": "room", "type": "teams",
         "secret": {"webhook_url": httpserver.url_for(f"/hook/{MARK}")}},
        {"name": "room_down", "type": "teams",
         "secret": {"webhook_url": httpserver.url_for(f"/hook/{MARK}/fail")}},
        {"name": "models", "type": "openai", "config": {"base_url": httpserver.url_for("/v1"),
                                                         "model": "m"},
         "secret": {"api_key": MARK}},
        {"name": "lake", "type": "s3", "config": {"endpoint_url": s3_endpoint,
                                                   "access_key_id": "AKIASCAN"},
         "secret": {"secret_access_key": MARK}},
    ]
    responses: list[str] = []
    for body in connections:
        r = client.post("/api/v1/connections/", headers=op["h"], json={"team": team, **body})
        assert r.status_code == 201, r.get_json()
        responses.append(r.get_data(as_text=True))
        tested = client.post(f"/api/v1/connections/{r.get_json()['id']}/test", headers=op["h"])
        responses.append(tested.get_data(as_text=True))
    caplog.set_level(logging.DEBUG)
    run = run_to_end(app, client, op, [
        {"id": "sql", "type": "sql", "with": {"connection": "pg",
                                              "query": f"SELECT '{MARK}' AS leaked"}},
        {"id": "sqlbad", "type": "sql", "with": {"connection": "pg",
                                                 "query": f"SELECT {MARK} FROM nowhere"}},
        {"id": "redis", "type": "redis", "with": {"connection": "cache", "command": "get",
                                                  "key": "k"}},
        {"id": "hook", "type": "webhook", "with": {"connection": "api", "url": "events",
                                                   "json": {"x": 1}}},
        {"id": "http", "type": "http", "with": {"connection": "api", "url": "events"}},
        {"id": "oauth", "type": "http", "with": {"connection": "oauth", "url": "events"}},
        {"id": "oauthbad", "type": "http", "with": {"connection": "oauth",
                                                    "url": "events/fail"}},
        {"id": "pages", "type": "http", "with": {"connection": "oauth", "url": "events",
                                                 "paginate": {"type": "link"}}},
        {"id": "slack", "type": "slack", "with": {"connection": "chat", "text": "hi",
                                                  "channel": "#c"}},
        {"id": "teams", "type": "teams", "with": {"connection": "room", "text": "hi"}},
        {"id": "teamsbad", "type": "teams", "with": {"connection": "room_down", "text": "x"}},
        {"id": "llm", "type": "llm", "with": {"connection": "models", "prompt": "hi"}},
        {"id": "s3", "type": "s3", "with": {"connection": "lake", "operation": "list",
                                            "bucket": "missing-bucket"}},
    ])
    tasks = run["by_task"]
    # Each task did reach its peer (the scan means something): outputs or the peers'
    # own errors came back.
    assert tasks["sql"]["output"]["rows"] == [{"leaked": "***"}]
    assert "***" in json.dumps(tasks["hook"]["output"])
    for task_id in ("http", "oauth", "pages"):
        assert "Bearer ***" in json.dumps(tasks[task_id]["output"]), task_id
    assert (tasks["oauthbad"]["error"] or "").startswith("HTTP 401 from")
    assert "***" in (tasks["teamsbad"]["error"] or "")
    responses.append(json.dumps(run))
    responses.append(client.get(f"/api/v1/runs/{run['id']}", headers=op["h"])
                     .get_data(as_text=True))
    responses.append(client.get("/api/v1/connections/", headers=op["h"]).get_data(as_text=True))
    for task_id in tasks:  # every attempt's log, as the run page shows it
        logs = client.get(f"/api/v1/runs/{run['id']}/tasks/{task_id}/logs", headers=op["h"])
        assert logs.status_code == 200, logs.get_json()
        responses.append(logs.get_data(as_text=True))
    admin = auth(api_token(client, factory.user("Admin")["username"]))
    responses.append(client.get("/api/v1/audit/?page_size=500", headers=admin)
                     .get_data(as_text=True))
    with app.app_context():
        stored = []
        for table, columns in (("apg_task_run", "output, error"),
                               ("apg_task_attempt", "error, log"),
                               ("apg_run", "params, trigger_payload, error"),
                               ("apg_connection", "config, ciphertext"),
                               ("apg_audit_event", "*")):
            rows = db.session.execute(sa.text(f"SELECT {columns} FROM {table}")).all()
            stored.append(json.dumps([list(map(str, row)) for row in rows]))
        db.session.remove()
    # The product's log lines (the test's HTTP peer logs its requests under "werkzeug":
    # that is the outside system's log, not ours).
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "werkzeug")
    for where, text in (("API responses", "\n".join(responses)), ("stored rows",
                        "\n".join(stored)), ("log lines", logged)):
        assert MARK not in text, f"the secret is in clear in the {where}"
        assert ACCESS not in text, f"the access token is in clear in the {where}"
