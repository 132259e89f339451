"""What a new user is told about a run: why a task did not run (``reason``), which
controls they may use now and why a failed run cannot be retried (``controls``,
``retry_blocked``), an approval's message as it was rendered and who may answer it; and
what the page shows of each, by the rule the service enforces."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.app import Factory, api_token, auth
from tests.support.engine import drain, work_once
from tests.support.pages import login, make_workflow, start


@pytest.fixture()
def team(app: Flask, factory: Factory) -> dict[str, Any]:
    """A team with an Author, an Operator and a Viewer, and API headers for each."""
    own = factory.team()
    users = {role: factory.user(role, teams=[own]) for role in ("Author", "Operator", "Viewer")}
    client = app.test_client()
    headers = {role: auth(api_token(client, user["username"])) for role, user in users.items()}
    return {"team": own, "users": users, "h": headers}


def get_run(client: FlaskClient, headers: dict[str, str], run_id: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/runs/{run_id}", headers=headers)
    assert r.status_code == 200, r.get_json()
    return dict(r.get_json()["result"])


def test_a_task_that_did_not_run_says_why(app, client, team):
    wid = make_workflow(client, team["h"]["Author"], team["team"]["name"], [
        {"id": "a", "type": "noop"},
        {"id": "gate", "type": "noop", "depends_on": ["a"], "when": "{{ params.go }}"},
        {"id": "after_gate", "type": "noop", "depends_on": ["gate"]},
        {"id": "bad", "type": "fail", "depends_on": ["a"], "with": {"message": "no"}},
        {"id": "after_bad", "type": "noop", "depends_on": ["bad"]},
        {"id": "on_failure", "type": "noop", "depends_on": ["a"], "trigger_rule": "one_failed"},
        {"id": "any_success", "type": "noop", "depends_on": ["gate"],
         "trigger_rule": "one_success"},
    ], params={"go": {"type": "boolean", "default": False}})
    run_id = start(client, team["h"]["Author"], wid)
    assert drain(app, run_id) == "failed"
    tasks = {t["task_id"]: t for t in get_run(client, team["h"]["Viewer"], run_id)["tasks"]}
    assert {k: (t["status"], t["reason"]) for k, t in tasks.items()} == {
        "a": ("succeeded", None),
        "gate": ("skipped", "when was false: {{ params.go }}"),
        "after_gate": ("skipped", "upstream skipped: gate"),
        "bad": ("failed", None),
        "after_bad": ("upstream_failed", "upstream failed: bad"),
        "on_failure": ("skipped", "trigger rule one_failed: no upstream failed"),
        "any_success": ("skipped", "trigger rule one_success: every upstream was skipped"),
    }
    page = login(app, team["users"]["Viewer"]).get(f"/runs/{run_id}").get_data(as_text=True)
    assert "when was false: {{ params.go }}" in page
    assert "Never ran: upstream failed: bad" in page  # not "No attempt yet"


def test_a_compensated_run_says_why_it_cannot_be_retried(app, client, team):
    wid = make_workflow(client, team["h"]["Author"], team["team"]["name"], [
        {"id": "book", "type": "noop", "compensate": {"type": "noop"}},
        {"id": "pay", "type": "fail", "depends_on": ["book"], "with": {"message": "declined"}},
    ])
    run_id = start(client, team["h"]["Author"], wid)
    assert drain(app, run_id) == "failed"
    got = get_run(client, team["h"]["Operator"], run_id)
    assert [c["status"] for c in got["compensations"]] == ["succeeded"]
    assert got["controls"] == [] and "Compensations ran" in got["retry_blocked"]
    # The service refuses with the very words the API and the page show.
    r = client.post(f"/api/v1/runs/{run_id}/retry", headers=team["h"]["Operator"])
    assert r.status_code == 409 and r.get_json()["message"] == got["retry_blocked"]
    page = login(app, team["users"]["Operator"]).get(f"/runs/{run_id}").get_data(as_text=True)
    assert re.search(r'id="retry-blocked"\s*>', page)
    assert got["retry_blocked"] in html.unescape(page)
    assert re.search(r'data-action="retry"\s*hidden', page)


def test_controls_are_what_the_caller_may_use_now(app, client, team):
    wid = make_workflow(client, team["h"]["Author"], team["team"]["name"], [
        {"id": "bad", "type": "fail", "with": {"message": "no"}}])
    run_id = start(client, team["h"]["Author"], wid)
    assert drain(app, run_id) == "failed"
    for role, expected in (("Author", ["retry"]), ("Operator", ["retry"]), ("Viewer", [])):
        got = get_run(client, team["h"][role], run_id)
        assert (got["controls"], got["retry_blocked"]) == (expected, None), role
    operator = login(app, team["users"]["Operator"])
    assert re.search(r'data-action="retry"\s*>', operator.get(f"/runs/{run_id}").get_data(
        as_text=True))
    viewer = login(app, team["users"]["Viewer"]).get(f"/runs/{run_id}").get_data(as_text=True)
    assert 'id="run-controls"' not in viewer
    r = client.post(f"/api/v1/runs/{run_id}/retry", headers=team["h"]["Operator"])
    assert r.status_code == 200 and r.get_json()["result"]["status"] == "queued"
    # Queued again, its task sent: it may be paused or cancelled, not retried or resumed.
    assert r.get_json()["result"]["controls"] == ["cancel", "pause"]


def test_an_approval_shows_its_rendered_message_and_who_may_answer(app, client, team):
    wid = make_workflow(client, team["h"]["Author"], team["team"]["name"], [
        {"id": "count", "type": "noop", "with": {"value": [1, 2, 3]}},
        {"id": "ask", "type": "approval", "depends_on": ["count"],
         "with": {"message": "Ship {{ tasks.count.output | length }} orders?",
                  "approvers": "Operator"}},
    ])
    run_id = start(client, team["h"]["Author"], wid)
    work_once(app)
    task = {t["task_id"]: t for t in get_run(client, team["h"]["Author"], run_id)["tasks"]}
    assert task["ask"]["status"] == "waiting_approval"
    assert task["ask"]["prompt"] == {"message": "Ship 3 orders?", "approvers": "Operator"}

    author = login(app, team["users"]["Author"]).get(f"/runs/{run_id}?task=ask")
    page = author.get_data(as_text=True)
    assert "Ship 3 orders?" in page and "tasks.count.output" not in page
    assert "Who may answer: users with the role Operator in team" in page
    assert 'value="approve"' not in page and "You may not answer this approval" in page
    r = client.post(f"/api/v1/runs/{run_id}/tasks/ask/approve", headers=team["h"]["Author"])
    assert r.status_code == 403

    operator = login(app, team["users"]["Operator"])
    page = operator.get(f"/runs/{run_id}?task=ask").get_data(as_text=True)
    assert 'value="approve"' in page and "You may not answer" not in page
    r = operator.post(f"/runs/{run_id}/tasks/ask/answer", data={"decision": "approve"})
    assert r.status_code == 302
    assert drain(app, run_id) == "succeeded"


def test_the_run_form_and_the_api_keep_the_authors_order_of_params(app, client, team):
    text = ("name: ordered\nparams:\n  zeta: {type: string, default: z}\n"
            "  alpha: {type: integer}\n  middle: {type: boolean, default: true}\n"
            "tasks:\n  - {id: a, type: noop}\n")
    r = client.post("/api/v1/workflows/", headers=team["h"]["Author"],
                    json={"team": team["team"]["name"], "definition": text})
    assert r.status_code == 201, r.get_json()
    wid = r.get_json()["id"]
    page = login(app, team["users"]["Operator"]).get(f"/workflows/{wid}").get_data(as_text=True)
    shown = re.findall(r'name="param\.(\w+)"', page)
    assert list(dict.fromkeys(shown)) == ["zeta", "alpha", "middle"]
    # Responses keep the definition's order too (JSON objects are not sorted).
    raw = client.get(f"/api/v1/workflows/{wid}", headers=team["h"]["Viewer"]).get_data(
        as_text=True)
    assert raw.index('"zeta"') < raw.index('"alpha"') < raw.index('"middle"')
