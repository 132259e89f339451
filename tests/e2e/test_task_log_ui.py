"""End-to-end: a task's log on the run page (CONNECTORS.md, "Task logs"). A Viewer
opens a run while a real worker process runs its `python` task: the log's first line
appears and is marked "following" while the attempt runs, then the rest and the end
line come without a reload; an earlier attempt's log is chosen from the list; the page
fits a phone. A real Chromium against a live server with CSRF on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect

from tests.support.app import api_token, auth, unique
from tests.support.browser import ConsoleLog, assert_no_csp_errors, login, settle

pytestmark = pytest.mark.e2e
PHONE = {"width": 390, "height": 844}


@pytest.fixture()
def worker(processes: Any) -> None:
    processes("worker")
    processes("scheduler")  # a retry's backoff waits in RQ's scheduled registry


def test_a_viewer_follows_a_task_s_log_live_and_reads_an_earlier_attempt(
    app: Flask, page: Any, factory: Any, console: ConsoleLog, screenshots: Path,
    worker: None,
) -> None:
    team = factory.team()
    author = factory.user("Author", teams=[team])
    viewer = factory.user("Viewer", teams=[team])
    client = app.test_client()
    headers = auth(api_token(client, author["username"]))
    key = unique("ui-log")
    r = client.post("/api/v1/workflows/", headers=headers, json={
        "team": team["name"], "definition": {"name": unique("logs"), "tasks": [
            {"id": "flaky", "type": "python",
             "with": {"callable": "tests.support.callables:flaky",
                      "kwargs": {"key": key, "fail_times": 1}},
             "retry": {"max_attempts": 2, "delay": "1s", "jitter": False}},
            {"id": "load", "type": "python", "depends_on": ["flaky"],
             "with": {"callable": "tests.support.callables:chatty_then_sleep",
                      "kwargs": {"key": "the warehouse", "seconds": 4}}}]}})
    assert r.status_code == 201, r.get_json()
    run_id = client.post(f"/api/v1/workflows/{r.get_json()['id']}/runs", headers=headers,
                         json={}).get_json()["id"]

    login(page, viewer["username"], viewer["password"])
    page.goto(f"/runs/{run_id}?task=load")
    panel = page.locator("#task-load")
    log = panel.locator(".apg-task-log")
    expect(log.locator(".apg-log-line", has_text="working on the warehouse")).to_be_visible(
        timeout=30_000)
    expect(panel.locator(".apg-log-live")).to_be_visible()
    expect(log.locator(".apg-log-line").first).to_contain_text("attempt 1 started on")
    settle(page)
    panel.screenshot(path=str(screenshots / "task_log_live.png"))
    expect(log.locator(".apg-log-line", has_text="done with the warehouse")).to_be_visible(
        timeout=30_000)
    expect(log.locator(".apg-log-line").last).to_contain_text("succeeded in")
    expect(panel.locator(".apg-log-live")).to_be_hidden()

    page.locator(".apg-task-item[data-task='flaky']").click()
    flaky = page.locator("#task-flaky")
    expect(flaky.locator(".apg-task-log .apg-log-line").last).to_contain_text("succeeded in")
    flaky.locator(".apg-log-attempt").select_option("1")
    first = flaky.locator(".apg-task-log")
    expect(first.locator(".apg-log-error")).to_contain_text("RuntimeError: flaky failure 1")
    expect(first.locator(".apg-log-line").last).to_contain_text("retry: attempt 2 not before")
    settle(page)
    flaky.screenshot(path=str(screenshots / "task_log_attempt.png"))

    page.set_viewport_size(PHONE)
    page.goto(f"/runs/{run_id}?task=load")
    expect(page.locator("#task-load .apg-log-line").last).to_contain_text("succeeded in")
    settle(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
    page.locator("#task-load").screenshot(path=str(screenshots / "phone_task_log.png"))
    assert_no_csp_errors(console)
