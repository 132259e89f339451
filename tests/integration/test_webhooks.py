"""Webhooks (TRIGGERS.md): the API, and each answer of the inbound table of
``POST /hooks/<token>``: accepted, replayed, unknown or rotated token, bad signature,
too large, not JSON, params invalid, filtered, rate limited."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.extensions import db
from app.security.actor import SYSTEM
from capability.secrets import service as secrets
from tests.support.app import Factory, api_token, auth
from tests.support.runs import make
from tests.support.signing import sign

PARAMS = {"repo": {"type": "string", "required": True}, "ref": {"type": "string"}}
TASKS = [{"id": "a", "type": "noop", "with": {"value": "{{ params.repo }}"}}]
STANDARD = "whsec_" + base64.b64encode(b"a-standard-webhooks-key").decode()


def _secret(app: Flask, team: str, name: str, value: str) -> None:
    with app.app_context():
        secrets.create_secret(db.session, SYSTEM, app.config,
                              secrets.SecretIn(team=team, name=name, value=value))
        db.session.remove()


def _hook(client: FlaskClient, op: dict[str, Any], wid: str, **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/webhooks/", headers=op["h"], json={
        "workflow_id": wid, "name": "github-push",
        "params": {"repo": "{{ body.repository.full_name }}", "ref": "{{ body.ref }}"},
        **body})
    assert r.status_code == 201, r.get_json()
    return dict(r.get_json()["result"])


def _send(client: FlaskClient, url: str, payload: Any, headers: dict[str, str] | None = None,
          raw: bytes | None = None, content_type: str = "application/json") -> Any:
    data = raw if raw is not None else json.dumps(payload).encode()
    return client.post(url, data=data, headers={"Content-Type": content_type,
                                                **(headers or {})})


PUSH = {"ref": "refs/heads/main", "repository": {"full_name": "acme/api"}}


@pytest.fixture()
def github(app: Flask, client: FlaskClient, op: dict[str, Any]) -> dict[str, Any]:
    _secret(app, op["team"]["name"], "gh_hook_secret", "gh-secret-value")
    wid = make(client, op, TASKS, params=PARAMS)
    hook = _hook(client, op, wid, signature={"scheme": "github", "secret": "gh_hook_secret"},
                 filter="{{ headers['x-github-event'] == 'push' }}")
    return {"hook": hook, "wid": wid, "secret": "gh-secret-value"}


def _deliveries(client: FlaskClient, op: dict[str, Any], hook_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/api/v1/webhooks/{hook_id}/deliveries", headers=op["h"])
    assert r.status_code == 200
    return list(r.get_json()["result"])


def test_a_signed_delivery_starts_a_run_and_a_replay_starts_none(
        app: Flask, client: FlaskClient, op: dict[str, Any], github: dict[str, Any]) -> None:
    hook = github["hook"]
    assert hook["url"].startswith("/hooks/") and len(hook["token"]) >= 32
    body = json.dumps(PUSH).encode()
    headers = sign("github", github["secret"], body, delivery="gh-1")
    r = _send(client, hook["url"], None, headers, raw=body)
    assert r.status_code == 202, r.get_json()
    run_id = r.get_json()["run_id"]
    run = client.get(f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"]
    assert run["params"] == {"repo": "acme/api", "ref": "refs/heads/main"}
    assert (run["trigger"], run["trigger_source"], run["delivery_id"]) == (
        "webhook", {"type": "webhook", "id": hook["id"]}, "gh-1")
    again = _send(client, hook["url"], None, headers, raw=body)
    assert again.status_code == 200
    assert again.get_json() == {"run_id": run_id, "duplicate": True}
    listed = client.get(f"/api/v1/runs/?trigger=webhook&trigger_source_id={hook['id']}",
                        headers=op["h"]).get_json()
    assert listed["count"] == 1
    log = _deliveries(client, op, hook["id"])
    assert [(d["outcome"], d["status_code"], d["run_id"]) for d in log] == [
        ("duplicate", 200, run_id), ("accepted", 202, run_id)]
    # Reads show the URL shortened: the token was shown once.
    got = client.get(f"/api/v1/webhooks/{hook['id']}", headers=op["h"]).get_json()["result"]
    assert "token" not in got and got["url"] == hook["url"][:13] + "…"


def test_the_refusals_of_the_contract(app: Flask, client: FlaskClient, op: dict[str, Any],
                                      github: dict[str, Any]) -> None:
    hook, secret = github["hook"], github["secret"]
    url = hook["url"]
    body = json.dumps(PUSH).encode()
    # Unknown token: 404, nothing recorded.
    assert _send(client, "/hooks/not-a-token", PUSH).status_code == 404
    # Bad, missing, tampered signatures: 401.
    wrong = sign("github", "not-the-secret", body, delivery="gh-2")
    assert _send(client, url, None, wrong, raw=body).status_code == 401
    assert _send(client, url, PUSH).status_code == 401
    tampered = sign("github", secret, body, delivery="gh-3")
    assert _send(client, url, None, tampered, raw=body.replace(b"main", b"evil")
                 ).status_code == 401
    # Not JSON although declared: 422.
    junk = b"{not json"
    assert _send(client, url, None, sign("github", secret, junk, delivery="gh-4"),
                 raw=junk).status_code == 422
    # Params that do not satisfy the workflow: 422 with the reason, no run.
    thin = json.dumps({"ref": "x"}).encode()
    r = _send(client, url, None, sign("github", secret, thin, delivery="gh-5"), raw=thin)
    assert r.status_code == 422 and "repository" in r.get_json()["message"]
    # The filter is false: 200, no run.
    ping = sign("github", secret, body, delivery="gh-6") | {"X-GitHub-Event": "ping"}
    r = _send(client, url, None, ping, raw=body)
    assert (r.status_code, r.get_json()) == (200, {"run_id": None, "filtered": True})
    # Too large: 413.
    big = json.dumps({"pad": "x" * (app.config["WEBHOOK_MAX_BYTES"] + 10)}).encode()
    assert _send(client, url, None, sign("github", secret, big), raw=big).status_code == 413
    log = _deliveries(client, op, hook["id"])
    assert [d["outcome"] for d in log] == [
        "too_large", "filtered", "invalid", "invalid", "denied", "denied", "denied"]
    assert all(d["run_id"] is None for d in log)
    assert client.get(f"/api/v1/runs/?trigger_source_id={hook['id']}",
                      headers=op["h"]).get_json()["count"] == 0
    # Refused signatures are audited, without the signature or the secret.
    with app.app_context():
        events = list(db.session.execute(select(AuditEvent).where(
            AuditEvent.target_id == hook["id"], AuditEvent.outcome == "denied")).scalars())
        text = json.dumps([e.after for e in events])
        db.session.remove()
    assert len(events) == 3 and "bad signature" in text and "missing" in text
    assert secret not in text and "sha256=" not in text
    with app.app_context():
        others = list(db.session.execute(select(AuditEvent).where(
            AuditEvent.target_id == hook["id"], AuditEvent.outcome == "error")).scalars())
        db.session.remove()
    assert sorted(e.after["status"] for e in others) == [413, 422, 422]


def test_rotating_the_token_retires_the_old_url(client: FlaskClient, op: dict[str, Any],
                                               github: dict[str, Any]) -> None:
    hook = github["hook"]
    r = client.post(f"/api/v1/webhooks/{hook['id']}/rotate-token", headers=op["h"])
    assert r.status_code == 200
    fresh = r.get_json()["result"]
    assert fresh["url"] != hook["url"] and fresh["token"] != hook["token"]
    body = json.dumps(PUSH).encode()
    headers = sign("github", github["secret"], body, delivery="gh-r")
    assert _send(client, hook["url"], None, headers, raw=body).status_code == 404
    assert _send(client, fresh["url"], None, headers, raw=body).status_code == 202


@pytest.mark.parametrize("scheme", ["stripe", "slack", "standard-webhooks", "hmac-sha256",
                                    "none"])
def test_each_scheme_end_to_end(app: Flask, client: FlaskClient, op: dict[str, Any],
                                scheme: str) -> None:
    secret = STANDARD if scheme == "standard-webhooks" else f"{scheme}-secret"
    signature: dict[str, Any] = {"scheme": scheme}
    if scheme != "none":
        name = scheme.replace("-", "_") + "_key"
        _secret(app, op["team"]["name"], name, secret)
        signature["secret"] = name
    wid = make(client, op, TASKS, params=PARAMS)
    hook = _hook(client, op, wid, signature=signature)
    event = {"id": "evt_9", **PUSH}
    body = json.dumps(event).encode()
    headers = sign(scheme, secret, body, delivery="msg-9")
    if scheme in ("none", "hmac-sha256"):  # no delivery id of their own: the client's key
        headers = {**headers, "Idempotency-Key": "k-9"}
    r = _send(client, hook["url"], None, headers, raw=body)
    assert r.status_code == 202, r.get_json()
    replay = _send(client, hook["url"], None, headers, raw=body)
    assert replay.get_json() == {"run_id": r.get_json()["run_id"], "duplicate": True}
    if scheme in ("stripe", "slack", "standard-webhooks"):
        stale = sign(scheme, secret, body, at=1_000_000_000, delivery="msg-10")
        r = _send(client, hook["url"], None, stale, raw=body)
        assert r.status_code == 401 and "tolerance" in r.get_json()["message"]


def test_a_slack_form_body_is_read_as_fields(app: Flask, client: FlaskClient,
                                             op: dict[str, Any]) -> None:
    _secret(app, op["team"]["name"], "slack_sign", "slack-signing")
    wid = make(client, op, TASKS, params=PARAMS)
    hook = _hook(client, op, wid, signature={"scheme": "slack", "secret": "slack_sign"},
                 params={"repo": "{{ body.text }}"})
    body = b"command=%2Fdeploy&text=acme%2Fweb"
    r = _send(client, hook["url"], None, sign("slack", "slack-signing", body), raw=body,
              content_type="application/x-www-form-urlencoded")
    assert r.status_code == 202, r.get_json()
    run = client.get(f"/api/v1/runs/{r.get_json()['run_id']}", headers=op["h"]).get_json()
    assert run["result"]["params"]["repo"] == "acme/web"


def test_the_rate_limit_answers_429(app: Flask, client: FlaskClient, op: dict[str, Any],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(app.config, "WEBHOOK_RATE_LIMIT", 3)
    wid = make(client, op, TASKS, params=PARAMS)
    hook = _hook(client, op, wid)
    codes = [_send(client, hook["url"], PUSH).status_code for _ in range(5)]
    assert codes == [202, 202, 202, 429, 429]


@pytest.mark.parametrize(("body", "path"), [
    ({"signature": {"scheme": "github"}}, "signature.secret"),
    ({"signature": {"scheme": "github", "secret": "nope"}}, "signature.secret"),
    ({"signature": {"scheme": "carrier-pigeon"}}, "signature.scheme"),
    ({"signature": {"scheme": "none", "tolerance": "soon"}}, "signature.tolerance"),
    ({"params": {"repo": "{{ body.x "}}, "params.repo"),
    ({"filter": "{{ 1 + }}"}, "filter"),
    ({"name": "has spaces"}, "name"),
])
def test_bad_input_names_the_field(client: FlaskClient, op: dict[str, Any],
                                   body: dict[str, Any], path: str) -> None:
    wid = make(client, op, TASKS, params=PARAMS)
    r = client.post("/api/v1/webhooks/", headers=op["h"],
                    json={"workflow_id": wid, "name": "x", **body})
    assert r.status_code == 422, r.get_json()
    assert path in [e["path"] for e in r.get_json()["errors"]]
    assert client.get(f"/api/v1/webhooks/?workflow={wid}", headers=op["h"]
                      ).get_json()["count"] == 0


def test_roles_and_teams(client: FlaskClient, factory: Factory, op: dict[str, Any]) -> None:
    wid = make(client, op, TASKS, params=PARAMS)
    hook = _hook(client, op, wid)
    url = f"/api/v1/webhooks/{hook['id']}"
    body = {"workflow_id": wid, "name": "renamed"}
    team = op["team"]
    viewer = auth(api_token(client, factory.user("Viewer", teams=[team])["username"]))
    operator = auth(api_token(client, factory.user("Operator", teams=[team])["username"]))
    stranger = auth(api_token(client, factory.user("Author", teams=[factory.team()])
                              ["username"]))
    for who in (viewer, operator):
        assert client.get(url, headers=who).status_code == 200
        assert client.get(f"{url}/deliveries", headers=who).status_code == 200
        assert client.put(url, headers=who, json=body).status_code == 403
        assert client.post(f"{url}/rotate-token", headers=who).status_code == 403
        assert client.delete(url, headers=who).status_code == 403
    for method, path in (("get", url), ("put", url), ("delete", url),
                         ("post", f"{url}/rotate-token"), ("get", f"{url}/deliveries")):
        assert getattr(client, method)(path, headers=stranger, json=body).status_code == 404
    assert client.put(url, headers=op["h"], json=body).get_json()["result"]["name"] == "renamed"
    assert client.delete(url, headers=op["h"]).status_code == 200
    assert _send(client, hook["url"], PUSH).status_code == 404  # gone with it


def test_expressions_read_the_body_as_trigger_payload_with_secrets_masked(
        app: Flask, client: FlaskClient, op: dict[str, Any]) -> None:
    from tests.support.engine import drain

    _secret(app, op["team"]["name"], "api_key", "sk-very-secret-42")
    wid = make(client, op, [{"id": "t", "type": "transform",
                             "with": {"value": "{{ trigger.payload.ref }} / "
                                               "{{ trigger.payload.leak }}"}}])
    hook = _hook(client, op, wid, params={})
    r = _send(client, hook["url"], {"ref": "refs/heads/main", "leak": "sk-very-secret-42"})
    assert r.status_code == 202, r.get_json()
    run_id = r.get_json()["run_id"]
    assert drain(app, run_id) == "succeeded"
    got = client.get(f"/api/v1/runs/{run_id}", headers=op["h"]).get_json()["result"]
    assert got["tasks"][0]["output"] == "refs/heads/main / ***"
    with app.app_context():
        from capability.models import Run

        stored = db.session.get(Run, run_id).trigger_payload
        db.session.remove()
    assert stored == {"ref": "refs/heads/main", "leak": "***"}
