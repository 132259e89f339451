"""Secrets in runs (DSL.md): ``{{ secrets.<name> }}`` reads a secret of the run's team,
and no value is ever stored or shown in clear: outputs, errors, for_each elements and a
sub-workflow's params carry ``***`` instead."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, text

from app.extensions import db
from app.security.actor import SYSTEM
from capability.models import Run
from capability.secrets import service as secrets
from tests.support.app import unique
from tests.support.engine import drain
from tests.support.runs import make, run_to_end, start

TOKEN = "tok-7f3a9c1e-very-secret"


def add_secret(app, team: str, name: str, value: str) -> None:
    with app.app_context():
        secrets.create_secret(db.session, SYSTEM, app.config,
                              secrets.SecretIn(team=team, name=name, value=value))
        db.session.remove()


def stored(app) -> str:
    """Everything the engine and the audit trail keep, as text (every row of their
    tables: no run may hold a secret in clear)."""
    tables = ("apg_run", "apg_task_run", "apg_task_attempt", "apg_task_item",
              "apg_audit_event")
    with app.app_context():
        dumps = [json.dumps(list(row), default=str) for table in tables
                 for row in db.session.execute(text(f"SELECT * FROM {table}")).all()]
        db.session.remove()
    return "\n".join(dumps)


def test_a_task_reads_its_team_s_secret_and_every_copy_is_masked(
        app, client, op, httpserver):
    from werkzeug import Response

    add_secret(app, op["team"]["name"], "api_token", TOKEN)
    seen: list[str | None] = []

    def echo(request: Any) -> Response:  # a server that echoes what it was sent
        seen.append(request.headers.get("Authorization"))
        body = {"you_sent": request.headers.get("Authorization"), "q": request.args.get("k")}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request("/echo").respond_with_handler(echo)
    httpserver.expect_request("/fail").respond_with_data("nope", status=404)
    run = run_to_end(app, client, op, [
        {"id": "call", "type": "http",
         "with": {"url": httpserver.url_for("/echo") + "?k={{ secrets.api_token }}",
                  "auth": {"type": "bearer", "token": "{{ secrets.api_token }}"}}},
        {"id": "copy", "type": "transform",
         "with": {"value": {"plain": "{{ secrets.api_token }}",
                            "inside": "Bearer {{ secrets.api_token }} and more"}}},
        {"id": "each", "type": "noop", "for_each": "{{ [secrets.api_token, 'x'] }}",
         "with": {"value": "{{ item }}"}},
        {"id": "bad", "type": "http",
         "with": {"url": httpserver.url_for("/fail") + "?k={{ secrets.api_token }}"}},
    ])
    by = run["by_task"]
    assert seen == [f"Bearer {TOKEN}"]  # the server got the real value
    assert by["call"]["status"] == "succeeded"
    assert by["call"]["output"]["json"] == {"you_sent": "Bearer ***", "q": "***"}
    assert by["copy"]["output"] == {"plain": "***", "inside": "Bearer *** and more"}
    assert by["each"]["output"] == ["***", "x"]
    assert by["bad"]["status"] == "failed" and by["bad"]["error"].startswith("HTTP 404 from ")
    assert "k=***" in by["bad"]["error"]
    response = client.get(f"/api/v1/runs/{run['id']}", headers=op["h"]).get_data(as_text=True)
    assert TOKEN not in response and "***" in response
    assert TOKEN not in stored(app)


def test_secrets_are_per_team_and_a_missing_one_fails_the_task(
        app, client, op, factory):
    other = factory.team()
    add_secret(app, other["name"], "elsewhere", "not-for-you-123")
    run = run_to_end(app, client, op, [
        {"id": "theirs", "type": "noop", "with": {"value": "{{ secrets.elsewhere }}"}},
        {"id": "guarded", "type": "noop", "when": "{{ secrets.missing == 'x' }}"},
    ])
    theirs, guarded = run["by_task"]["theirs"], run["by_task"]["guarded"]
    assert theirs["status"] == "failed" and theirs["error"].startswith("with.value:")
    assert "elsewhere" in theirs["error"] and theirs["attempts"] == 1  # not retried
    assert guarded["status"] == "failed" and guarded["error"].startswith("when:")
    assert "not-for-you-123" not in stored(app)


def test_a_secret_that_does_not_decrypt_fails_the_task_that_reads_it(
        app, client, op):
    add_secret(app, op["team"]["name"], "old_key", "saved-under-another-key")
    wid = make(client, op, [
        {"id": "reads", "type": "noop", "with": {"value": "{{ secrets.old_key }}"}},
        {"id": "ignores", "type": "noop"},
    ])
    run_id = start(client, op, wid).get_json()["id"]
    saved = app.config.get("SECRETS_KEY")
    from cryptography.fernet import Fernet

    app.config["SECRETS_KEY"] = Fernet.generate_key().decode()  # the old key is gone
    try:
        assert drain(app, run_id) == "failed"
    finally:
        app.config["SECRETS_KEY"] = saved
    got = client.get(f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"]
    by = {t["task_id"]: t for t in got["tasks"]}
    assert by["reads"]["status"] == "failed" and by["reads"]["attempts"] == 1
    assert by["reads"]["error"].startswith("with.value: secrets: a secret does not decrypt")
    assert by["ignores"]["status"] == "succeeded"


def test_a_sub_workflow_gets_a_masked_value_for_a_secret_param(
        app, client, op):
    add_secret(app, op["team"]["name"], "pass_on", TOKEN)
    child = unique("child")
    r = client.post("/api/v1/workflows/", headers=op["h"], json={
        "team": op["team"]["name"],
        "definition": {"name": child, "params": {"token": {"type": "string", "required": True}},
                       "tasks": [{"id": "use", "type": "noop",
                                  "with": {"value": "{{ params.token }}"}}]}})
    assert r.status_code == 201, r.get_json()
    run = run_to_end(app, client, op, [
        {"id": "sub", "type": "workflow",
         "with": {"workflow": child, "params": {"token": "{{ secrets.pass_on }}"}}},
    ])
    assert run["by_task"]["sub"]["output"] == {"use": "***"}
    with app.app_context():
        (params,) = db.session.execute(
            select(Run.params).where(Run.parent_run_id == run["id"])).scalars()
        db.session.remove()
    assert params == {"token": "***"}  # a child should read the secret itself
    assert TOKEN not in stored(app)
