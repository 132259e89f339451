"""Every template of the library, used through ``POST /api/v1/templates/<slug>/use`` and
run to its end against real peers on this machine: pytest-httpserver plays the REST
APIs, Slack, Teams and the OpenAI-compatible model; PostgreSQL (a database of its own,
with an ``orders`` table), Redis (a database number of its own), aiosmtpd and moto's
S3 server are the real thing. Approvals are answered through the API as they come."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from rq.scheduler import RQScheduler
from werkzeug import Request, Response

from app.runtime.redis_conn import get_redis
from capability.templates import service as templates
from config import database_url
from tests.support.app import LOOPBACK_PEERS
from tests.support.engine import work_once
from tests.support.runs import get_run
from tests.support.s3 import moto_server

PEER_DB = "apg_template_peer"
REDIS_DB = 13
TABLES = ("orders", "landing_customers", "replica_orders", "daily_sales", "access_requests",
          "spend_requests")
SLUGS = [s for s, t in templates.library().items() if t.category != "agent-procedures"]
AGENT_SLUGS = [s for s, t in templates.library().items() if t.category == "agent-procedures"]
# What each template's run is given (its required parameters and a few choices).
PARAMS: dict[str, dict[str, Any]] = {
    "api-to-api-sync": {"since": "2026-01-01T00:00:00Z"},
    "postgres-to-s3-export": {"day": "2026-01-05", "bucket": "exports"},
    "postgres-daily-rollup": {"day": "2026-01-05"},
    "failed-run-notify": {},
    "incident-broadcast": {"title": "Checkout errors", "details": "5xx on /pay"},
    "approval-gated-deploy": {"service": "checkout", "version": "v1.2.3",
                              "approver_role": "Author"},
    "access-request-approval": {"requester": "ann@example.com", "resource": "analysts"},
    "two-step-spend-approval": {"requester": "bob@example.com", "amount": 7000,
                                "purpose": "laptops", "manager_role": "Author"},
    "sql-daily-email-report": {"day": "2026-01-05"},
    "s3-purge-before-cutoff": {"bucket": "logs", "cutoff": "2026-01-03", "dry_run": False},
    "s3-archive-prefix": {"source_bucket": "incoming", "prefix": "in/",
                          "archive_bucket": "archive"},
    "s3-inventory-report": {"bucket": "logs", "prefixes": ["logs/"]},
    "llm-ticket-triage": {"ticket_id": "T-1", "subject": "Cannot pay",
                          "body": "Checkout fails with 500 since 9:00"},
    "llm-document-summary": {"bucket": "docs", "key": "notes.md"},
}
# The agent-guided templates: their parameters, and what the agent submits for each of
# their agent steps (schema- and check-valid outputs).
AGENT_PARAMS: dict[str, dict[str, Any]] = {
    "agent-data-migration-runbook": {"change": "add a note column", "table": "orders"},
    "agent-incident-triage": {"service": "checkout", "alert": "p99 over 2s since 09:00",
                              "approver_role": "Author"},
    "agent-release-checklist": {"product": "shop", "version": "2.4.0",
                                "changes_url": "https://git.example.com/compare/2.3...2.4"},
}
AGENT_OUTPUTS: dict[str, dict[str, Any]] = {
    "agent-data-migration-runbook": {
        "plan": {"statements": ["ALTER TABLE orders ADD COLUMN note text"],
                 "rollback": ["ALTER TABLE orders DROP COLUMN note"], "expected_rows": 3},
        "migrate": {"executed": 1, "rows_after": 3, "rolled_back": False},
    },
    "agent-incident-triage": {
        "gather": {"evidence": [{"source": "grafana", "finding": "p99 at 3 s since 09:00"}]},
        "diagnose": {"cause": "the database pool is exhausted", "confidence": 0.8,
                     "impact": "slow checkouts", "remediation": "raise the pool size to 50",
                     "rollback": "set the pool back to 20", "severity": "SEV2"},
        "remediate": {"actions": ["pool size 50"], "verified": True, "rolled_back": False},
    },
    "agent-release-checklist": {
        "notes": {"summary": "Faster checkout, and two fixes in this release.",
                  "features": ["faster checkout"], "fixes": ["rounding", "typo"],
                  "breaking": []},
        "checklist": {"items": [{"item": f"check {i}", "done": True, "evidence": "seen ok"}
                                for i in range(5)]},
    },
}
# Templates started by a webhook delivery: the body posted to /hooks/<token>.
DELIVERIES: dict[str, Any] = {
    "webhook-to-slack": {"title": "Build 7 failed", "text": "tests red", "url": "https://ci/7"},
    "webhook-to-teams-card": {"title": "Form sent", "status": "new", "email": "a@example.com"},
    "alertmanager-to-slack": {"status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "HighLatency", "severity": "critical"},
         "annotations": {"summary": "p99 over 2s", "runbook_url": "https://runbooks/lat"}},
        {"status": "firing", "labels": {"alertname": "Noise", "severity": "info"}}]},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 Message accepted"


def _llm_reply(body: dict[str, Any]) -> dict[str, Any]:
    schema = json.dumps(body.get("response_format") or {})
    content = ({"category": "bug", "priority": "p1", "summary": "checkout fails",
                "urgent": True} if "category" in schema else
               {"abstract": "Notes.", "key_points": ["a"],
                "action_items": [{"what": "fix", "owner": "ann"}]})
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1733500000,
            "model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant",
                                                             "content": json.dumps(content)}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def _peer(request: Request) -> Response:
    """Every HTTP peer at once, by path."""
    path = request.path
    if path.endswith("/chat/completions"):
        return Response(json.dumps(_llm_reply(request.get_json())),
                        content_type="application/json")
    if path.startswith("/hooks/"):  # Slack and Teams incoming webhooks
        return Response("ok" if "slack" in path else "1")
    if path.startswith("/src/") and request.method == "GET":
        return Response(json.dumps({"data": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
                                    "next_cursor": None, "EUR": 1.0}),
                        content_type="application/json")
    return Response(json.dumps({"ok": True}), content_type="application/json")


def _sql(database: str, *statements: str) -> None:
    engine = sa.create_engine(database_url(f"postgresql://postgres@127.0.0.1:5432/{database}"),
                              isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    engine.dispose()


@pytest.fixture(scope="module")
def peer_db() -> Iterator[None]:
    _sql("postgres", f"DROP DATABASE IF EXISTS {PEER_DB} WITH (FORCE)",
         f"CREATE DATABASE {PEER_DB}")
    yield


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture()
def peers(app: Flask, httpserver: HTTPServer, s3_endpoint: str,
          peer_db: None) -> Iterator[dict[str, Any]]:
    before = app.config["EGRESS_ALLOW"]
    app.config["EGRESS_ALLOW"] = f"{LOOPBACK_PEERS} 127.0.0.1:5432 127.0.0.1:6379"
    # Tables reset, not the database: the connector's pooled connections stay valid.
    _sql(PEER_DB, "DROP TABLE IF EXISTS " + ", ".join(TABLES),
         "CREATE TABLE orders (id serial PRIMARY KEY, number text, region text, "
                     "customer_id integer, total numeric(12, 2), created_at timestamptz, "
                     "updated_at timestamptz)",
         "INSERT INTO orders (number, region, customer_id, total, created_at, "
                     "updated_at) VALUES ('n1', 'eu', 1, 10.5, '2026-01-05 10:00Z', now()), "
                     "('n2', 'us', 2, 20, '2026-01-05 11:00Z', now()), "
                     "('n3', 'eu', NULL, 5, now(), now())")
    store = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                         aws_access_key_id="AKIATEST", aws_secret_access_key="secret")
    for bucket in ("exports", "logs", "incoming", "archive", "docs"):
        try:
            store.create_bucket(Bucket=bucket)
        except store.exceptions.BucketAlreadyOwnedByYou:
            pass
    for key in ("logs/2026-01-01/a.log", "logs/2026-01-02/b.log", "logs/2026-01-04/c.log"):
        store.put_object(Bucket="logs", Key=key, Body=b"x")
    store.put_object(Bucket="incoming", Key="in/one.csv", Body=b"id\n1\n")
    store.put_object(Bucket="docs", Key="notes.md", Body=b"# Notes\nAnn fixes the bug.")
    Path(app.config["CONNECTION_FILES_DIR"]).mkdir(parents=True, exist_ok=True)
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    smtp.start()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(_peer)
    cache = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    cache.flushdb()
    yield {"http": httpserver, "s3": s3_endpoint, "smtp": smtp.port, "inbox": inbox,
           "store": store, "cache": cache}
    smtp.stop()
    cache.flushdb()
    app.config["EGRESS_ALLOW"] = before


def _connections(client: FlaskClient, op: dict[str, Any], slug: str,
                 peers: dict[str, Any]) -> None:
    http: HTTPServer = peers["http"]
    for need in templates.library()[slug].connections:
        name, kind = need["name"], need["type"]
        body: dict[str, Any] = {"team": op["team"]["name"], "name": name, "type": kind}
        if kind == "http":
            body["config"] = {"base_url": http.url_for(f"/src/{name}/")}
        elif kind in ("slack", "teams"):
            body["secret"] = {"webhook_url": http.url_for(f"/hooks/{kind}/{name}")}
        elif kind == "postgres":
            body["config"] = {"host": "127.0.0.1", "port": 5432, "database": PEER_DB,
                              "username": "postgres"}
            body["secret"] = {"password": "unused"}
        elif kind == "smtp":
            body["config"] = {"host": "127.0.0.1", "port": peers["smtp"], "starttls": False,
                              "from": "apg@example.com"}
        elif kind == "s3":
            body["config"] = {"endpoint_url": peers["s3"], "region": "us-east-1",
                              "access_key_id": "AKIATEST"}
            body["secret"] = {"secret_access_key": "secret"}
        elif kind == "openai":
            body["config"] = {"base_url": http.url_for("/v1"), "model": "gpt-4o-mini"}
            body["secret"] = {"api_key": "sk-test"}
        elif kind == "redis":
            body["config"] = {"url": f"redis://127.0.0.1:6379/{REDIS_DB}"}
        r = client.post("/api/v1/connections/", headers=op["h"], json=body)
        assert r.status_code == 201, (name, r.get_json())


def _start(client: FlaskClient, op: dict[str, Any], slug: str, workflow_id: str,
           params: dict[str, Any]) -> str:
    if slug not in DELIVERIES:
        r = client.post(f"/api/v1/workflows/{workflow_id}/runs", headers=op["h"],
                        json={"params": params})
        assert r.status_code == 201, r.get_json()
        return str(r.get_json()["id"])
    hook = client.post("/api/v1/webhooks/", headers=op["h"],
                       json={"workflow_id": workflow_id, "name": "sender"})
    assert hook.status_code == 201, hook.get_json()
    delivered = client.post(hook.get_json()["result"]["url"], json=DELIVERIES[slug])
    assert delivered.status_code == 202, delivered.get_json()
    return str(delivered.get_json()["run_id"])


def _run(app: Flask, client: FlaskClient, op: dict[str, Any], run_id: str,
         outputs: dict[str, Any] | None = None) -> dict[str, Any]:
    names = app.config["RQ_QUEUES"]
    scheduler = RQScheduler(names, connection=get_redis(app))
    scheduler.prepare_registries(names)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        work_once(app)
        scheduler.enqueue_scheduled_jobs()
        run = get_run(client, op, run_id)
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run
        for task in run["tasks"]:
            if task["status"] == "waiting_approval":
                answer = client.post(f"/api/v1/runs/{run_id}/tasks/{task['task_id']}/approve",
                                     headers=op["h"], json={"comment": "ok"})
                assert answer.status_code == 200, answer.get_json()
            if task["status"] == "waiting_input":  # an agent step: the agent answers
                assert outputs is not None and task["task_id"] in outputs, task["task_id"]
                answer = client.post(f"/api/v1/runs/{run_id}/tasks/{task['task_id']}/complete",
                                     headers=op["h"], json={"output": outputs[task["task_id"]]})
                assert answer.status_code == 200, answer.get_json()
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} not finished: {get_run(client, op, run_id)}")


@pytest.mark.parametrize("slug", SLUGS)
def test_each_template_runs_to_success(app: Flask, client: FlaskClient, op: dict[str, Any],
                                       peers: dict[str, Any], slug: str) -> None:
    _connections(client, op, slug, peers)
    made = client.post(f"/api/v1/templates/{slug}/use", headers=op["h"],
                       json={"team": op["team"]["name"]})
    assert made.status_code == 201, made.get_json()
    params = dict(PARAMS.get(slug, {}))
    if slug == "http-health-check-alert":
        params["health_url"] = peers["http"].url_for("/healthz")
    run = _run(app, client, op, _start(client, op, slug, made.get_json()["id"], params))
    errors = {t["task_id"]: t["error"] for t in run["tasks"] if t["error"]}
    assert run["status"] == "succeeded", errors
    assert all(t["status"] in ("succeeded", "skipped") for t in run["tasks"]), errors
    needs = {c["type"] for c in templates.library()[slug].connections}
    if "smtp" in needs:
        assert peers["inbox"].messages, "no email arrived"


@pytest.mark.parametrize("slug", AGENT_SLUGS)
def test_each_agent_guided_template_runs_with_an_agent_answering(
        app: Flask, client: FlaskClient, op: dict[str, Any], peers: dict[str, Any],
        slug: str) -> None:
    _connections(client, op, slug, peers)
    made = client.post(f"/api/v1/templates/{slug}/use", headers=op["h"],
                       json={"team": op["team"]["name"]})
    assert made.status_code == 201, made.get_json()
    run = _run(app, client, op, _start(client, op, slug, made.get_json()["id"],
                                       AGENT_PARAMS[slug]), AGENT_OUTPUTS[slug])
    errors = {t["task_id"]: t["error"] for t in run["tasks"] if t["error"]}
    assert run["status"] == "succeeded", errors
    agent_steps = {t["task_id"] for t in run["tasks"] if t["task_id"] in AGENT_OUTPUTS[slug]}
    assert agent_steps == set(AGENT_OUTPUTS[slug])
    if "smtp" in {c["type"] for c in templates.library()[slug].connections}:
        assert peers["inbox"].messages, "no email arrived"
