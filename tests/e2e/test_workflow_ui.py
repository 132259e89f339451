"""End-to-end: an Author writes a workflow in the CodeMirror editor, sees the errors of
"Validate" on their lines, fixes them, saves, edits a second version, compares the two
and rolls back, in a real Chromium against a live server with CSRF on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import ConsoleLog, assert_no_csp_errors, login, open_menu, settle

pytestmark = pytest.mark.e2e

DEFINITION = """\
name: order-sync
description: Pull new orders and push them to the warehouse
params:
  since: {type: string, default: "1970-01-01"}
tasks:
  - id: fetch
    type: http
    with:
      method: GET
      url: "https://shop.example/api/orders?since={{ params.since }}"
    retry: {max_attempts: 5, backoff: exponential}
    timeout: 20s
  - id: push
    type: http
    depends_on: [fetch]
    for_each: "{{ tasks.fetch.output.json.orders }}"
    max_parallel: 4
    with: {method: POST, url: "https://wh.example/orders", json: "{{ item }}"}
  - id: notify
    type: noop
    depends_on: [push]
    trigger_rule: all_done
"""
# Two mistakes: a duration on line 12 and a misspelt upstream task on line 15.
WITH_ERRORS = DEFINITION.replace("timeout: 20s", "timeout: 20 secs").replace(
    "depends_on: [fetch]", "depends_on: [fecth]"
)
SECOND = DEFINITION.replace("max_parallel: 4", "max_parallel: 8\n    timeout: 1m").replace(
    "    trigger_rule: all_done\n",
    "    trigger_rule: all_done\n    when: \"{{ tasks.push.status == 'failed' }}\"\n",
)


def replace_text(page: Any, text: str) -> None:
    """Select everything in the editor and type ``text`` over it (as a paste would)."""
    page.locator(".CodeMirror").click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(text)


def editor_value(page: Any) -> str:
    return str(page.evaluate("document.querySelector('.CodeMirror').CodeMirror.getValue()"))


def marked_lines(page: Any) -> list[int]:
    """Line numbers (as the gutter shows them) of the lines carrying an error marker."""
    return [
        int(n)
        for n in page.locator(".CodeMirror-code > div").filter(
            has=page.locator(".apg-error-marker")
        ).locator(".CodeMirror-linenumber").all_inner_texts()
    ]


def fix_line(page: Any, line: int, remove: int, typed: str) -> None:
    """Jump to ``line`` through its entry in the error list and retype its end."""
    page.locator("#error-list a", has_text=f"line {line}").click()
    page.keyboard.press("End")
    for _ in range(remove):
        page.keyboard.press("Backspace")
    page.keyboard.type(typed)


def test_author_writes_validates_saves_edits_diffs_and_rolls_back(
    page: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    team = factory.team()
    author = factory.user("Author", teams=[team])
    login(page, author["username"], author["password"])

    open_menu(page, "Workflows", "Workflows")
    assert "/workflows/list/" in page.url
    with page.expect_navigation():
        page.locator("#new-workflow").click()
    assert page.url.endswith("/workflows/new")
    assert page.locator("#team option:checked").inner_text().startswith(team["name"])

    # Type a definition with two mistakes; "Validate" marks both lines.
    replace_text(page, WITH_ERRORS)
    assert editor_value(page) == WITH_ERRORS
    page.locator("#validate").click()
    page.locator(".apg-check-bad").wait_for()
    assert marked_lines(page) == [12, 15]
    assert page.locator(".CodeMirror-code .apg-error-line").count() == 2
    errors = page.locator("#error-list li").all_inner_texts()
    assert any("line 15" in e and "unknown task 'fecth'" in e for e in errors), errors
    assert any("line 12" in e and "tasks[0].timeout" in e for e in errors), errors
    page.locator(".CodeMirror").click()  # close nothing, just move focus off the button
    settle(page)
    page.screenshot(path=str(screenshots / "workflow_editor.png"), full_page=True)

    # Fix both lines by keyboard; "Validate" is happy, the markers are gone.
    fix_line(page, 15, len("fecth]"), "fetch]")
    fix_line(page, 12, len("20 secs"), "20s")
    assert editor_value(page) == DEFINITION
    page.locator("#validate").click()
    page.locator(".apg-check-ok").wait_for()
    assert marked_lines(page) == []
    assert not page.locator("#workflow-errors").is_visible()

    with page.expect_navigation():
        page.locator("#save").click()
    assert re.search(r"/workflows/[0-9a-f-]{36}$", page.url), page.url
    workflow_url = page.url
    assert page.locator("#workflow-name").inner_text() == "order-sync"
    assert page.locator(".alert-success", has_text="created: version 1").is_visible()
    assert page.locator("#workflow-version").inner_text() == "v1"

    # A second version through the editor.
    with page.expect_navigation():
        page.locator("#edit-workflow").click()
    assert editor_value(page) == DEFINITION
    replace_text(page, SECOND)
    with page.expect_navigation():
        page.locator("#save").click()
    assert page.url == workflow_url
    assert page.locator(".alert-success", has_text="Saved version 2").is_visible()
    assert page.locator("#versions tbody tr").count() == 2

    # Compare v1 -> v2 (the default pair).
    with page.expect_navigation():
        page.locator("#compare").click()
    assert "/diff" in page.url and "from=1" in page.url and "to=2" in page.url
    assert page.locator("td.apg-diff-del", has_text="max_parallel: 4").count() == 1
    assert page.locator("td.apg-diff-ins", has_text="max_parallel: 8").count() == 1
    assert page.locator("td.apg-diff-ins", has_text="timeout: 1m").count() == 1
    settle(page)
    page.screenshot(path=str(screenshots / "workflow_diff.png"), full_page=True)

    # Roll back to v1: a confirm dialog, then a third version equal to the first.
    page.goto(workflow_url)
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.locator("#version-1 .apg-rollback").click()
    assert page.locator(".alert-success", has_text="Rolled back to version 1").is_visible()
    assert page.locator("#workflow-version").inner_text() == "v3"
    assert page.locator("#version-3", has_text="rollback to v1").count() == 1
    assert "max_parallel: 4" in page.locator("#workflow-page .CodeMirror").inner_text()
    settle(page)
    page.screenshot(path=str(screenshots / "workflow_page.png"), full_page=True)

    # The list shows the workflow at its new version and links to its page.
    with page.expect_navigation():
        page.locator(".apg-breadcrumb a", has_text="Workflows").click()
    row = page.locator("tr.apg-workflow-row", has_text="order-sync")
    assert "v3" in row.inner_text() and team["name"] in row.inner_text()
    with page.expect_navigation():
        row.locator("a.apg-workflow-link").click()
    assert page.url == workflow_url
    assert_no_csp_errors(console)
    # The browser asks for /favicon.ico on its own; the app has none.
    errors = [e for e in console.errors if "favicon.ico" not in e]
    assert not errors, errors
