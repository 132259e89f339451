"""End-to-end: a run's page with an agent step waiting for its output. An Operator reads
the rendered instructions, inputs and output schema, submits an output that breaks the
schema (every violation is listed in place, the step keeps waiting), then a good one:
the step succeeds and the run goes on, live. A Viewer sees the step without the box."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.support.app import api_token, auth, quiet_socketio_listener, unique
from tests.support.browser import ConsoleLog, assert_no_csp_errors, login, logout, settle
from tests.support.engine import drain, work_once

pytestmark = pytest.mark.e2e

TASKS = [
    {"id": "classify", "type": "agent", "with": {
        "instructions": "Classify support ticket {{ params.ticket }} and say how sure you are.",
        "inputs": {"ticket": "{{ params.ticket }}", "customer": "ACME"},
        "output_schema": {"type": "object", "required": ["category", "confidence"],
                          "properties": {"category": {"enum": ["bug", "question", "feature"]},
                                         "confidence": {"type": "number"}}},
        "model_hint": "fast",
        "checks": [{"jsonpath": "$.confidence", "min": 0, "max": 1}]}},
    {"id": "route", "type": "noop", "depends_on": ["classify"],
     "with": {"value": "{{ tasks.classify.output.category }}"}},
]


@pytest.fixture(scope="module", autouse=True)
def _quiet_listener() -> Iterator[None]:
    yield
    quiet_socketio_listener()


def test_an_operator_answers_an_agent_step_on_the_run_page(
    app: Flask, page: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    team = factory.team()
    author = factory.user("Author", teams=[team])
    operator = factory.user("Operator", teams=[team])
    viewer = factory.user("Viewer", teams=[team])
    client = app.test_client()
    headers = auth(api_token(client, author["username"]))
    r = client.post("/api/v1/workflows/", headers=headers, json={
        "team": team["name"], "definition": {
            "name": unique("triage"), "tasks": TASKS,
            "params": {"ticket": {"type": "string", "default": "T-1042"}}}})
    assert r.status_code == 201, r.get_json()
    run_id = client.post(f"/api/v1/workflows/{r.get_json()['id']}/runs",
                         headers=headers).get_json()["id"]
    work_once(app)  # the agent step now waits

    login(page, viewer["username"], viewer["password"])
    page.goto(f"/runs/{run_id}")
    box = page.locator('[data-agent="classify"]')
    box.wait_for()
    assert "Classify support ticket T-1042" in box.inner_text()
    assert box.locator(".apg-agent-form").count() == 0
    assert box.locator(".apg-agent-not-yours").is_visible()
    logout(page)

    login(page, operator["username"], operator["password"])
    page.goto(f"/runs/{run_id}")
    page.locator("#live-indicator", has_text="live").wait_for()
    assert box.is_visible()
    assert box.locator(".apg-agent-instructions").inner_text() == (
        "Classify support ticket T-1042 and say how sure you are.")
    assert '"ticket": "T-1042"' in box.locator(".apg-agent-inputs").inner_text()
    assert '"required": [' in box.locator(".apg-agent-schema").inner_text()
    assert box.locator(".apg-agent-hint").inner_text() == "model hint: fast"
    assert page.locator('.apg-task-item[data-task="classify"] .apg-status').inner_text() == (
        "waiting input")

    # Not JSON: refused in the page, nothing sent.
    box.locator(".apg-agent-output").fill("{category: bug")
    box.locator(".apg-agent-submit").click()
    refused = box.locator(".apg-agent-refused")
    refused.filter(has_text="not valid JSON").wait_for()

    # A schema-breaking output: every violation, with its path, and the step waits on.
    box.locator(".apg-agent-output").fill('{"category": "feature-request", "confidence": "high"}')
    box.locator(".apg-agent-submit").click()
    refused.filter(has_text="output.confidence").wait_for()
    errors = refused.locator(".apg-agent-refused-errors li").all_inner_texts()
    assert errors == [
        "output.category 'feature-request' is not one of ['bug', 'question', 'feature']",
        "output.confidence 'high' is not of type 'number'"], errors
    assert "still waiting" in refused.locator(".apg-agent-refused-message").inner_text()
    settle(page)
    box.screenshot(path=str(screenshots / "run_agent_step.png"))
    page.set_viewport_size({"width": 390, "height": 844})
    refused.scroll_into_view_if_needed()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    settle(page)
    page.screenshot(path=str(screenshots / "phone_run_agent_step.png"))
    page.set_viewport_size({"width": 1400, "height": 900})

    # A good one: accepted, the step succeeds and the run goes on.
    box.locator(".apg-agent-output").fill('{"category": "bug", "confidence": 0.92}')
    box.locator(".apg-agent-submit").click()
    page.locator('.apg-task-item[data-task="classify"] .apg-status',
                 has_text="succeeded").wait_for()
    assert drain(app, run_id) == "succeeded"
    page.locator("#run-status", has_text="succeeded").wait_for()
    assert not box.is_visible()
    got = client.get(f"/api/v1/runs/{run_id}", headers=headers).get_json()["result"]
    outputs = {t["task_id"]: t["output"] for t in got["tasks"]}
    assert outputs == {"classify": {"category": "bug", "confidence": 0.92}, "route": "bug"}
    assert_no_csp_errors(console)
