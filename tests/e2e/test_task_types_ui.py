"""End-to-end, Workflows -> Task types and the editor's help panel: a Viewer finds every
installed task type with its fields and an example, and filters them; an Author sees
the help of the task type under the cursor change as the cursor moves between tasks
(YAML and JSON, a compensate, a misspelt type). Real Chromium, at desktop and phone
width."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from capability import dsl
from tests.support.browser import ConsoleLog, assert_no_csp_errors, login, open_menu, settle

pytestmark = pytest.mark.e2e
PHONE = {"width": 390, "height": 844}
DEFINITION = """\
name: nightly-report
tasks:
  - id: load
    type: sql
    with:
      connection: warehouse
      query: SELECT count(*) AS n FROM orders
  - id: tell
    type: email
    depends_on: [load]
    with:
      connection: mail
      to: [ops@example.com]
      subject: Nightly report
      text: "{{ tasks.load.output.rows }}"
    compensate:
      type: noop
  - id: oops
    type: sqll
"""
AS_JSON = json.dumps({"name": "wait-a-bit", "tasks": [
    {"id": "first", "type": "noop"},
    {"id": "pause", "type": "delay", "depends_on": ["first"], "with": {"seconds": "5m"}},
]}, indent=2)


def cursor_to(page: Any, line: int) -> None:
    """Click into ``line`` (1-based) of the editor, as a person moves the cursor."""
    page.locator(".CodeMirror-code .CodeMirror-line").nth(line - 1).click()


def set_text(page: Any, text: str) -> None:
    page.locator(".CodeMirror").click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(text)


def wide(page: Any) -> dict[str, Any]:
    """How wide the page is against the viewport, and what sticks out."""
    return dict(page.evaluate("""() => {
        const width = window.innerWidth;
        const wide = Array.from(document.querySelectorAll('body *'))
          .filter(e => e.getBoundingClientRect().right > width + 1)
          .filter(e => !e.closest('.CodeMirror, pre.apg-example'))
          .slice(0, 5)
          .map(e => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`);
        return {scroll: document.documentElement.scrollWidth, width: width, wide: wide};
    }"""))


def test_the_palette_lists_every_type_and_filters(page: Any, factory: Any, console: ConsoleLog,
                                                  screenshots: Path) -> None:
    team = factory.team()
    viewer = factory.user("Viewer", teams=[team])
    login(page, viewer["username"], viewer["password"])
    open_menu(page, "Workflows", "Task types")
    assert page.url.endswith("/workflows/task-types")

    names = dsl.registry.names()
    assert {"noop", "fail", "delay", "transform", "python", "http", "approval", "workflow",
            "sql", "redis", "webhook", "slack", "teams", "email", "s3", "amqp", "mqtt",
            "nats", "validate", "jsonpath", "llm"} <= set(names)
    expect(page.locator("section.apg-type")).to_have_count(len(names))
    for name in names:
        entry = page.locator(f"#type-{name}")
        expect(entry.locator(".panel-title")).to_have_text(name)
        assert entry.locator(".apg-field").count() >= 1, name
        expect(entry.locator("pre.apg-example")).to_contain_text(f"type: {name}")
    sql = page.locator("#type-sql")
    max_rows = sql.locator('.apg-field[data-field="max_rows"]')
    expect(max_rows).to_contain_text("integer, 1 to 100000")
    expect(max_rows).to_contain_text("default 1000")
    expect(sql.locator('.apg-field[data-field="connection"]')).to_contain_text("required")
    expect(sql.locator('.apg-field[data-field="fetch"] .apg-field-values')).to_have_text(
        "one of all one none")
    expect(sql.locator(".apg-type-connections")).to_contain_text(
        "of type postgres, mysql or sqlite")
    expect(page.locator('#type-http .apg-field[data-field="auth.type"]')).to_be_visible()
    settle(page)
    page.screenshot(path=str(screenshots / "task_types.png"))

    # The filter: every word must match a type's name, description, fields or connections.
    box = page.locator("#task-type-filter")
    box.fill("sql")
    expect(page.locator("#type-sql")).to_be_visible()
    expect(page.locator("#type-noop")).to_be_hidden()
    expect(page.locator('#task-type-index a[data-type="noop"]')).to_be_hidden()
    box.fill("connection mqtt")
    expect(page.locator("section.apg-type:visible")).to_have_count(1)
    expect(page.locator("#task-type-count")).to_have_text(f"1 of {len(names)} types")
    box.fill("no such thing")
    expect(page.locator("#no-task-type")).to_be_visible()
    box.fill("")
    expect(page.locator("section.apg-type:visible")).to_have_count(len(names))
    expect(page.locator("#no-task-type")).to_be_hidden()

    # A link of the index jumps to its type.
    page.locator('#task-type-index a[data-type="workflow"]').click()
    assert page.url.endswith("#type-workflow")
    expect(page.locator("#type-workflow")).to_be_in_viewport()

    page.set_viewport_size(PHONE)
    page.goto("/workflows/task-types")
    settle(page)
    found = wide(page)
    assert found["scroll"] <= PHONE["width"], found
    page.locator("#task-type-filter").fill("email")
    settle(page)
    page.screenshot(path=str(screenshots / "phone_task_types.png"), full_page=True)
    assert_no_csp_errors(console)


def test_the_editor_shows_the_help_of_the_task_under_the_cursor(
        page: Any, factory: Any, console: ConsoleLog, screenshots: Path) -> None:
    team = factory.team()
    author = factory.user("Author", teams=[team])
    login(page, author["username"], author["password"])
    page.goto("/workflows/new")
    set_text(page, DEFINITION)
    panel = page.locator("#task-help")
    title = page.locator("#task-help-title")
    # What a control for "the task under the cursor" hears (task_help.js).
    page.evaluate("""() => { window.heard = [];
        document.getElementById('task-help').addEventListener('apg:task-focus',
            (e) => window.heard.push(e.detail)); }""")

    cursor_to(page, 1)
    expect(page.locator("#task-help-empty")).to_be_visible()
    expect(title).to_have_text("Task type")

    cursor_to(page, 6)
    expect(title).to_have_text("Task type sql")
    expect(panel.locator('.apg-field[data-field="max_rows"]')).to_contain_text("default 1000")
    expect(panel.locator("pre.apg-example")).to_contain_text("type: sql")
    expect(page.locator("#task-help-empty")).to_be_hidden()
    href = page.locator("#task-help-palette").get_attribute("href")
    assert href == "/workflows/task-types#type-sql", href
    heard = page.evaluate("window.heard[window.heard.length - 1]")
    assert heard == {"type": "sql", "id": "load", "known": True, "from": 2, "to": 6}, heard
    settle(page)
    page.screenshot(path=str(screenshots / "editor_help_panel.png"), full_page=True)

    cursor_to(page, 13)
    expect(title).to_have_text("Task type email")
    expect(panel.locator('.apg-field[data-field="attachments[].name"]')).to_be_attached()
    cursor_to(page, 17)  # in the compensate of the email task
    expect(title).to_have_text("Task type noop")
    cursor_to(page, 15)
    expect(title).to_have_text("Task type email")
    cursor_to(page, 19)
    expect(title).to_have_text("Task type sqll")
    expect(page.locator("#task-help-unknown")).to_contain_text("No task type is called sqll")
    assert page.locator("#task-help-palette").get_attribute("href") == "/workflows/task-types"
    # The keyboard moves the cursor too.
    page.keyboard.press("Control+Home")
    expect(title).to_have_text("Task type")
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    expect(title).to_have_text("Task type sql")

    # JSON: the object of the task under the cursor.
    set_text(page, AS_JSON)
    line = AS_JSON.splitlines().index('        "seconds": "5m"') + 1
    cursor_to(page, line)
    expect(title).to_have_text("Task type delay")
    expect(panel.locator('.apg-field[data-field="seconds"]')).to_contain_text("duration")
    cursor_to(page, 4)
    expect(title).to_have_text("Task type noop")
    heard = page.evaluate("window.heard[window.heard.length - 1]")
    assert (heard["type"], heard["id"]) == ("noop", "first"), heard

    page.set_viewport_size(PHONE)
    set_text(page, DEFINITION)
    cursor_to(page, 6)
    expect(title).to_have_text("Task type sql")
    settle(page)
    found = wide(page)
    assert found["scroll"] <= PHONE["width"], found
    assert_no_csp_errors(console)
