"""End-to-end: a run's page explains the failures the hardening added (a call the egress
policy refused, a ``when`` over its time budget) and shows a large output cut, with a link
to the whole of it. Desktop width (1280 x 800)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.support.app import api_token, auth, quiet_socketio_listener, unique
from tests.support.browser import ConsoleLog, assert_no_csp_errors, login, settle
from tests.support.engine import drain

pytestmark = pytest.mark.e2e

DESKTOP = {"width": 1280, "height": 800}
# 10^10 empty loop turns: far past EXPRESSION_TIMEOUT (2 s), stopped by it.
SLOW_WHEN = ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
             "{% endfor %}true")


@pytest.fixture(scope="module", autouse=True)
def _quiet_listener() -> Iterator[None]:
    yield
    quiet_socketio_listener()


def failed_run(app: Flask, factory: Any, tasks: list[dict[str, Any]]) -> tuple[dict, str]:
    """A team's Author and a finished run of ``tasks`` (its id)."""
    team = factory.team()
    author = factory.user("Author", teams=[team])
    client = app.test_client()
    headers = auth(api_token(client, author["username"]))
    r = client.post("/api/v1/workflows/", headers=headers, json={
        "team": team["name"], "definition": {"name": unique("hardened"), "tasks": tasks}})
    assert r.status_code == 201, r.get_json()
    run_id = client.post(f"/api/v1/workflows/{r.get_json()['id']}/runs",
                         headers=headers).get_json()["id"]
    drain(app, run_id)
    return author, run_id


def task_panel(page: Any, author: dict, run_id: str, task: str) -> Any:
    page.set_viewport_size(DESKTOP)
    login(page, author["username"], author["password"])
    page.goto(f"/runs/{run_id}?task={task}")
    return page.locator(f"#task-{task}")


def test_a_call_refused_by_the_egress_policy_is_explained(
    app: Flask, page: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    # Link-local (cloud metadata) is denied by default; the suite allows only loopback.
    author, run_id = failed_run(app, factory, [
        {"id": "metadata", "type": "http",
         "with": {"url": "http://169.254.169.254/latest/meta-data/"}}])
    panel = task_panel(page, author, run_id, "metadata")
    assert page.locator("#run-status").inner_text() == "failed"
    reason = "egress to 169.254.169.254:80 denied by policy (EGRESS_ALLOW to permit)"
    assert panel.locator(".apg-task-error").inner_text() == reason
    rows = panel.locator(".apg-attempts tbody tr")
    assert rows.count() == 1  # refused by policy: not retried
    assert rows.first.locator(".apg-attempt-error").inner_text() == reason
    settle(page)
    page.screenshot(path=str(screenshots / "run_failed_egress.png"), full_page=True)
    assert_no_csp_errors(console)


def test_a_when_over_its_budget_is_explained(
    app: Flask, page: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    author, run_id = failed_run(app, factory, [
        {"id": "first", "type": "noop"},
        {"id": "gated", "type": "noop", "depends_on": ["first"], "when": SLOW_WHEN}])
    panel = task_panel(page, author, run_id, "gated")
    assert page.locator("#run-status").inner_text() == "failed"
    error = panel.locator(".apg-task-error").inner_text()
    assert error.startswith("when: expression exceeded its 2 s budget"), error
    settle(page)
    page.screenshot(path=str(screenshots / "run_failed_when.png"), full_page=True)
    assert_no_csp_errors(console)


def test_a_large_output_is_cut_with_a_link_to_the_whole(
    app: Flask, page: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    author, run_id = failed_run(app, factory, [
        {"id": "render", "type": "transform",
         "with": {"value": "{{ 'abcdefghij' * 10000 }}"}}])
    panel = task_panel(page, author, run_id, "render")
    cut = panel.locator(".apg-output-cut")
    assert "Large output: 100,002 characters of JSON, only the start is shown." in (
        cut.inner_text())
    preview = panel.locator(".apg-task-output").inner_text()
    assert preview.startswith('"abcdefghij') and preview.endswith("\u2026")
    assert len(preview) < 100_002
    with page.context.expect_page() as opened:
        cut.locator(".apg-output-whole").click()
    whole = opened.value
    whole.wait_for_load_state()
    body = json.loads(whole.locator("body").inner_text())
    assert body["result"]["output"] == "abcdefghij" * 10000, str(body)[:200]
    whole.close()
    page.evaluate("document.activeElement.blur()")  # no focus ring in the screenshot
    cut.scroll_into_view_if_needed()
    settle(page)
    page.screenshot(path=str(screenshots / "run_output_cut.png"))
    assert_no_csp_errors(console)
