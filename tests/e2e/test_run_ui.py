"""End-to-end: an Author starts a run from the "Run" form of a workflow's page, lands on
the run's page and watches its task graph turn green live (Socket.IO over the Redis
message queue, no reload) while the test drives a real RQ worker; then the runs list.
A real Chromium against a live server with CSRF on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect

from tests.support.app import api_token, auth, quiet_socketio_listener, unique
from tests.support.browser import ConsoleLog, assert_no_csp_errors, login, open_menu, settle
from tests.support.engine import drain, work_once

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
def _quiet_listener() -> Iterator[None]:
    yield
    quiet_socketio_listener()


FAILING = [{"id": "fetch", "type": "noop", "for_each": [1, 2, 3]},
           {"id": "push", "type": "fail", "depends_on": ["fetch"],
            "with": {"message": "warehouse refused the batch"}},
           {"id": "report", "type": "noop", "depends_on": ["push"]}]
COMPENSATED = [{"id": "reserve", "type": "noop",
                "compensate": {"type": "noop", "with": {"value": "released"}}},
               {"id": "charge", "type": "fail", "depends_on": ["reserve"],
                "with": {"message": "card declined"}}]
APPROVAL = [{"id": "approve", "type": "approval", "with": {"message": "Publish the report?"}},
            {"id": "publish", "type": "noop", "depends_on": ["approve"]}]


def definition(key: str) -> dict[str, Any]:
    return {
        "name": unique("nightly-orders"),
        "description": "Extract the day's orders, check and enrich them, load the warehouse",
        "params": {"batch": {"type": "integer", "required": True},
                   "region": {"type": "string", "default": "eu-west"}},
        "tasks": [
            {"id": "extract", "type": "noop", "with": {"value": "{{ params.batch }}"}},
            {"id": "validate", "type": "python", "depends_on": ["extract"],
             "with": {"callable": "tests.support.callables:flaky",
                      "kwargs": {"key": key, "fail_times": 1}},
             "retry": {"max_attempts": 2, "delay": "1s", "jitter": False}},
            {"id": "enrich", "type": "delay", "depends_on": ["extract"],
             "with": {"seconds": 1}},
            {"id": "load", "type": "transform", "depends_on": ["validate", "enrich"],
             "with": {"value": {"batch": "{{ params.batch }}", "region": "{{ params.region }}",
                                "rows": "{{ tasks.validate.output.calls * 100 }}"}}},
            {"id": "notify", "type": "noop", "depends_on": ["load"]},
        ],
    }


def node_statuses(page: Any) -> dict[str, str]:
    found = page.evaluate(
        """() => Array.from(document.querySelectorAll('.apg-node')).map(
             n => [n.getAttribute('data-task'), n.getAttribute('class')])""")
    return {task: re.search(r"apg-st-(\w+)", cls).group(1) for task, cls in found}


def test_author_runs_a_workflow_and_watches_it_live(
    app: Flask, page: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    team = factory.team()
    author = factory.user("Author", teams=[team])
    client = app.test_client()
    headers = auth(api_token(client, author["username"]))
    r = client.post("/api/v1/workflows/", headers=headers,
                    json={"team": team["name"], "definition": definition(unique("e2e"))})
    assert r.status_code == 201, r.get_json()
    wid = r.get_json()["id"]

    login(page, author["username"], author["password"])
    page.goto(f"/workflows/{wid}")
    page.locator("#run-workflow").click()
    # The panel opens with Bootstrap's collapse animation: click once it has settled,
    # and wait for the page the POST answers (not for the current page's load state).
    page.locator("#run-panel.collapse.in").wait_for()
    assert page.locator("#param-region").input_value() == "eu-west"
    with page.expect_navigation():
        page.locator("#start-run").click()  # batch is required: the form says so, no run
    assert page.locator("#param-batch-error").inner_text() == "parameter required"
    settle(page)
    page.screenshot(path=str(screenshots / "run_form.png"))
    page.locator("#param-batch").fill("42")
    with page.expect_navigation():
        page.locator("#start-run").click()
    assert re.search(r"/runs/[0-9a-f-]{36}$", page.url), page.url
    run_id = page.url.rsplit("/", 1)[-1]
    assert page.locator(".alert-success", has_text=f"Run {run_id[-8:]} started.").is_visible()
    assert page.locator("#run-status").inner_text() in ("queued", "running")
    assert page.locator("#run-trigger").inner_text() == "manual"
    page.locator("#live-indicator", has_text="live").wait_for()
    assert node_statuses(page)["extract"] in ("queued", "pending")
    page.evaluate("window.apgNoReload = 'still here'")

    # One pass of the worker: extract succeeds, and the browser hears of it at once.
    work_once(app)
    # Locators, not wait_for_function: the page's CSP forbids the eval that needs.
    page.locator(".apg-node[data-task=extract].apg-st-succeeded").wait_for(timeout=5000)
    assert node_statuses(page)["notify"] == "pending"

    # The rest: validate fails once and is retried, enrich waits a second.
    assert drain(app, run_id) == "succeeded"
    expect(page.locator(".apg-node.apg-st-succeeded")).to_have_count(5, timeout=8000)
    page.locator("#run-status", has_text="succeeded").wait_for()
    assert page.evaluate("window.apgNoReload") == "still here"  # no reload happened
    assert set(node_statuses(page).values()) == {"succeeded"}
    bars = page.locator('.apg-tl-row[data-task="validate"] .apg-tl-bar')
    assert bars.count() == 2
    assert "apg-st-failed" in (bars.nth(0).get_attribute("class") or "")
    assert page.locator("#run-controls form:visible").count() == 0  # nothing to control now

    # The task panels were filled from the API: outputs and attempts, without a reload.
    page.locator('.apg-node[data-task="load"]').click()
    panel = page.locator("#task-load")
    panel.locator(".apg-task-output", has_text='"rows": 200').wait_for()
    page.locator('.apg-node[data-task="validate"]').click()
    assert page.locator("#task-validate .apg-attempts tbody tr").count() == 2
    assert "flaky failure 1" in page.locator("#task-validate .apg-attempts").inner_text()
    settle(page)
    page.screenshot(path=str(screenshots / "run_page.png"), full_page=True)

    # Two more runs of the team for the list: one failed, one waiting for an approval.
    for tasks in (FAILING, APPROVAL):
        r = client.post("/api/v1/workflows/", headers=headers, json={
            "team": team["name"], "definition": {"name": unique("ops"), "tasks": tasks}})
        other = client.post(f"/api/v1/workflows/{r.get_json()['id']}/runs", headers=headers)
        if tasks is FAILING:
            assert drain(app, other.get_json()["id"]) == "failed"
        else:
            work_once(app)
    open_menu(page, "Workflows", "Runs")
    assert "/runs/list/" in page.url
    row = page.locator("tr.apg-run-row", has=page.locator(f'a[href="/runs/{run_id}"]'))
    assert "succeeded" in row.inner_text() and "manual" in row.inner_text()
    assert page.locator("tr.apg-run-row").count() == 3
    settle(page)
    page.screenshot(path=str(screenshots / "runs_list.png"), full_page=True)
    with page.expect_navigation():
        row.locator("td").nth(1).click()  # anywhere on the row opens the run
    assert page.url.endswith(f"/runs/{run_id}")

    assert_no_csp_errors(console)
    # The browser reports the refused form (422, on purpose above) and its own favicon ask.
    errors = [e for e in console.errors
              if "favicon.ico" not in e and not ("422" in e and f"/workflows/{wid}/run" in e)]
    assert not errors, errors


def test_operator_approves_a_task_and_retries_a_failed_run(
    app: Flask, page: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    team = factory.team()
    author = factory.user("Author", teams=[team])
    operator = factory.user("Operator", teams=[team])
    client = app.test_client()
    headers = auth(api_token(client, author["username"]))
    runs = {}
    for name, tasks in (("approval", APPROVAL), ("failing", FAILING),
                        ("compensated", COMPENSATED)):
        r = client.post("/api/v1/workflows/", headers=headers, json={
            "team": team["name"], "definition": {"name": unique(name), "tasks": tasks}})
        runs[name] = client.post(f"/api/v1/workflows/{r.get_json()['id']}/runs",
                                 headers=headers).get_json()["id"]
    assert drain(app, runs["failing"]) == "failed"
    assert drain(app, runs["compensated"]) == "failed"
    work_once(app)  # the approval task now waits

    login(page, operator["username"], operator["password"])
    page.goto(f"/runs/{runs['approval']}")
    page.locator("#live-indicator", has_text="live").wait_for()
    box = page.locator('[data-approval="approve"]')
    assert box.is_visible() and "Publish the report?" in box.inner_text()
    assert "Who may answer: any Operator or Author of team" in box.inner_text()
    settle(page)
    box.screenshot(path=str(screenshots / "run_approval.png"))
    assert page.locator("#run-pause").is_visible() and not page.locator("#run-resume").is_visible()
    box.locator("textarea[name=comment]").fill("numbers checked")
    with page.expect_navigation():
        box.locator(".apg-approve").click()
    assert page.locator(".alert-success", has_text="Task approve approved.").is_visible()
    page.locator("#live-indicator", has_text="live").wait_for()
    drain(app, runs["approval"])
    page.locator("#run-status", has_text="succeeded").wait_for()
    assert not box.is_visible()
    output = page.locator("#task-approve .apg-task-output")
    output.filter(has_text='"comment": "numbers checked"').wait_for()

    # A failed run's page: the items of its for_each task, the Retry button, and why a
    # task never ran.
    page.goto(f"/runs/{runs['failing']}?task=report")
    why = page.locator("#task-report .apg-task-reason-row")
    assert why.is_visible() and "upstream failed: push" in why.inner_text()
    assert "Never ran: upstream failed: push" in page.locator(
        "#task-report .apg-attempts").inner_text()
    settle(page)
    page.locator("#task-report").screenshot(path=str(screenshots / "run_task_reason.png"))
    page.goto(f"/runs/{runs['failing']}?task=fetch")
    assert page.locator("#task-fetch .apg-item-chips .apg-st-succeeded").count() == 3
    assert page.locator("#run-retry").is_visible() and not page.locator("#run-cancel").is_visible()
    # A compensated run: the undo step is listed; such a run cannot be retried, and the
    # page says why (the service's words), at desktop and phone width.
    page.goto(f"/runs/{runs['compensated']}")
    page.locator('#compensations tbody tr[data-task="reserve"]', has_text="succeeded").wait_for()
    assert not page.locator("#run-retry").is_visible()
    notice = page.locator("#retry-blocked")
    assert notice.is_visible() and "Compensations ran" in notice.inner_text()
    settle(page)
    page.screenshot(path=str(screenshots / "run_retry_blocked.png"))
    page.set_viewport_size({"width": 390, "height": 844})
    assert notice.is_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(screenshots / "phone_run_retry_blocked.png"))
    page.set_viewport_size({"width": 1400, "height": 900})

    open_menu(page, "Workflows", "Failed tasks")
    row = page.locator(f'tr.apg-failed-row[data-run="{runs["failing"]}"]')
    assert "warehouse refused the batch" in row.inner_text()
    undone = page.locator(f'tr.apg-failed-row[data-run="{runs["compensated"]}"]')
    assert "card declined" in undone.inner_text() and undone.locator(".apg-retry-run").count() == 0
    settle(page)
    page.screenshot(path=str(screenshots / "failed_tasks.png"))
    with page.expect_navigation():
        row.locator(".apg-retry-run").click()
    done = f"Run {runs['failing'][-8:]}: failed tasks queued again."
    assert page.locator(".alert-success", has_text=done).is_visible()
    assert "/failed_tasks/list/" in page.url
    assert drain(app, runs["failing"]) == "failed"
    assert_no_csp_errors(console)
    errors = [e for e in console.errors if "favicon.ico" not in e]
    assert not errors, errors



def test_without_a_socket_the_page_polls_the_api(
    app: Flask, page: Any, factory: Any, console: ConsoleLog
) -> None:
    team = factory.team()
    viewer = factory.user("Viewer", teams=[team])
    client = app.test_client()
    headers = auth(api_token(client, factory.user("Author", teams=[team])["username"]))
    r = client.post("/api/v1/workflows/", headers=headers, json={
        "team": team["name"], "definition": {"name": unique("poll"), "tasks": FAILING[:1]}})
    run_id = client.post(f"/api/v1/workflows/{r.get_json()['id']}/runs",
                         headers=headers).get_json()["id"]
    page.route("**/socket.io/**", lambda route: route.abort())  # as if a proxy refused it
    login(page, viewer["username"], viewer["password"])
    page.goto(f"/runs/{run_id}")
    page.locator("#live-indicator", has_text="polling").wait_for()
    assert page.locator("#run-controls").count() == 0  # a Viewer has no buttons
    page.evaluate("window.apgNoReload = 'still here'")
    assert drain(app, run_id) == "succeeded"
    page.locator("#run-status", has_text="succeeded").wait_for(timeout=8000)
    assert page.locator(".apg-node.apg-st-succeeded").count() == 1
    assert page.evaluate("window.apgNoReload") == "still here"
    assert_no_csp_errors(console)


def test_load_more_items_keeps_following_the_run(
    app: Flask, page: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    """A for_each of 150 elements: the page shows the first 100 and their total; "Load
    more items" shows the rest, and live updates still arrive (the run then ends)."""
    team = factory.team()
    author = factory.user("Author", teams=[team])
    client = app.test_client()
    headers = auth(api_token(client, author["username"]))
    r = client.post("/api/v1/workflows/", headers=headers, json={
        "team": team["name"], "definition": {"name": unique("many"), "tasks": [
            {"id": "each", "type": "noop", "for_each": list(range(150)),
             "with": {"value": "{{ item }}"}},
            {"id": "gate", "type": "approval", "depends_on": ["each"],
             "with": {"message": "Go on?"}}]}})
    run_id = client.post(f"/api/v1/workflows/{r.get_json()['id']}/runs",
                         headers=headers).get_json()["id"]
    work_once(app)  # the elements are made and run; the gate waits
    login(page, author["username"], author["password"])
    page.goto(f"/runs/{run_id}?task=each")
    panel = page.locator("#task-each")
    expect(panel.locator(".apg-items-count")).to_have_text("150")
    expect(panel.locator(".apg-item-chips .apg-status")).to_have_count(100)
    page.locator("#live-indicator", has_text="live").wait_for(timeout=8000)
    panel.locator(".apg-items-more").click()
    expect(panel.locator(".apg-item-chips .apg-status")).to_have_count(150)
    expect(panel.locator(".apg-items-more")).to_be_hidden()
    settle(page)
    panel.locator(".apg-items").screenshot(path=str(screenshots / "run_items_more.png"))
    answer = client.post(f"/api/v1/runs/{run_id}/tasks/gate/approve", headers=headers,
                         json={})
    assert answer.status_code == 200, answer.get_json()
    work_once(app)
    page.locator("#run-status", has_text="succeeded").wait_for(timeout=8000)
    expect(panel.locator(".apg-item-chips .apg-status")).to_have_count(150)
    page.set_viewport_size({"width": 390, "height": 844})
    settle(page)
    panel.locator(".apg-items").scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / "phone_run_items_more.png"))
    assert_no_csp_errors(console)


def test_a_task_past_the_drawn_panels_opens_on_demand(
    app: Flask, page: Any, factory: Any, console: ConsoleLog
) -> None:
    """A run of 105 tasks: the page draws the first 100 panels; selecting the last task
    builds its panel with its dependencies, status, attempts and output."""
    team = factory.team()
    author = factory.user("Author", teams=[team])
    client = app.test_client()
    headers = auth(api_token(client, author["username"]))
    tasks = [{"id": "t000", "type": "noop"}] + [
        {"id": f"t{i:03d}", "type": "noop", "depends_on": ["t000"],
         "with": {"value": f"out {i}"}} for i in range(1, 105)]
    r = client.post("/api/v1/workflows/", headers=headers, json={
        "team": team["name"], "definition": {"name": unique("wide"), "tasks": tasks}})
    run_id = client.post(f"/api/v1/workflows/{r.get_json()['id']}/runs",
                         headers=headers).get_json()["id"]
    assert drain(app, run_id) == "succeeded"
    login(page, author["username"], author["password"])
    page.goto(f"/runs/{run_id}")
    assert page.locator(".apg-task-detail").count() == 100
    page.locator('.apg-task-item[data-task="t104"]').click()
    panel = page.locator("#task-t104")
    expect(panel).to_be_visible()
    expect(panel.locator(".apg-task-title")).to_have_text("t104")
    expect(panel.locator(".apg-task-deps")).to_have_text("t000")
    expect(panel.locator(".panel-heading .apg-status")).to_have_text("succeeded")
    expect(panel.locator(".apg-task-output")).to_have_text('"out 104"')
    expect(panel.locator(".apg-attempts tbody tr")).to_have_count(1)
    assert_no_csp_errors(console)
