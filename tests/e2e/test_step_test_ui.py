"""End-to-end: "Test this step" in the editor (CONNECTORS.md, "Testing a step"). An Author
puts the cursor in a `python` task, writes the upstream output and a param, runs the
test on a real worker process and reads the status, output and log, no run made; a bad
JSON is told at once; an approval cannot be tested alone; unsaved changes are pointed
out; the panel fits a phone. A real Chromium against a live server with CSRF on."""

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

SOURCE = """name: {name}
params:
  extra: {{type: integer, default: 1}}
tasks:
  - id: fetch
    type: noop
  - id: shape
    type: python
    depends_on: [fetch]
    with:
      callable: tests.support.callables:chatty
      kwargs:
        lines: "{{{{ tasks.fetch.output.n + params.extra }}}}"
  - id: ask
    type: approval
    depends_on: [shape]
    with: {{message: "Publish the report"}}
"""


@pytest.fixture()
def worker(processes: Any) -> None:
    processes("worker")


def cursor_to(page: Any, line: int) -> None:
    page.locator(".CodeMirror-code .CodeMirror-line").nth(line - 1).click()


def test_an_author_tests_one_step_from_the_editor(
    app: Flask, page: Any, factory: Any, console: ConsoleLog, screenshots: Path,
    worker: None,
) -> None:
    team = factory.team()
    author = factory.user("Author", teams=[team])
    client = app.test_client()
    headers = auth(api_token(client, author["username"]))
    r = client.post("/api/v1/workflows/", headers=headers, json={
        "team": team["name"], "definition": SOURCE.format(name=unique("shape"))})
    assert r.status_code == 201, r.get_json()
    wid = r.get_json()["id"]
    runs_before = client.get("/api/v1/runs/", headers=headers).get_json()["count"]

    login(page, author["username"], author["password"])
    page.goto(f"/workflows/{wid}/edit")
    expect(page.locator("#step-test")).to_be_hidden()  # the cursor is in no task yet
    cursor_to(page, 8)  # in `shape`
    expect(page.locator("#step-test")).to_be_visible()
    page.locator("#step-test-open").click()
    expect(page.locator("#step-test-task")).to_have_text("shape")
    # The upstream tasks its templates read are there to fill in.
    assert '"fetch"' in page.locator("#step-test-upstream").input_value()
    page.locator("#step-test-upstream").fill("{not json")
    page.locator("#step-test-run").click()
    expect(page.locator("#step-test-problem")).to_contain_text("Upstream outputs is not JSON")

    page.locator("#step-test-upstream").fill('{"fetch": {"output": {"n": 2}}}')
    page.locator("#step-test-params").fill('{"extra": 1}')
    page.locator("#step-test-run").click()
    expect(page.locator("#step-test-status")).to_have_text("succeeded", timeout=30_000)
    expect(page.locator("#step-test-output")).to_contain_text('"lines": 3')
    expect(page.locator("#step-test-log .apg-log-line")).to_have_count(3)
    expect(page.locator("#step-test-log")).to_contain_text("line 1: slow answer")
    expect(page.locator("#step-test-took")).to_contain_text("no run made")
    settle(page)
    page.locator("#task-help").screenshot(path=str(screenshots / "editor_test_step.png"))
    assert client.get("/api/v1/runs/", headers=headers).get_json()["count"] == runs_before

    # A param the workflow does not accept: the API's 422, path and reason, shown.
    page.locator("#step-test-params").fill('{"extra": "many"}')
    page.locator("#step-test-run").click()
    expect(page.locator("#step-test-problem")).to_contain_text("params.extra")

    cursor_to(page, 16)  # in `ask`: an approval needs a run
    expect(page.locator("#step-test-open")).to_be_disabled()
    expect(page.locator("#step-test-note")).to_contain_text("needs a run")

    cursor_to(page, 6)  # `fetch`; then a change not saved yet
    page.keyboard.press("End")
    page.keyboard.type("  # edited")
    cursor_to(page, 5)
    expect(page.locator("#step-test-note")).to_contain_text("the test runs the saved version 1")

    page.set_viewport_size(PHONE)
    page.goto(f"/workflows/{wid}/edit")
    cursor_to(page, 8)
    page.locator("#step-test-open").click()
    page.locator("#step-test-upstream").fill('{"fetch": {"output": {"n": 0}}}')
    page.locator("#step-test-run").click()
    expect(page.locator("#step-test-status")).to_have_text("succeeded", timeout=30_000)
    settle(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
    page.locator("#task-help").screenshot(path=str(screenshots / "phone_editor_test_step.png"))
    assert_no_csp_errors(console)
