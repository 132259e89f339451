"""End-to-end at phone width (390 x 844): the lists, a workflow's page (with its Run
form), the editor, a run's page and the home page, with real data, fit the screen.
Nothing may make the page wider than the viewport: the task graph scrolls inside its
own box, tables stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.support.app import api_token, auth, unique
from tests.support.browser import ConsoleLog, assert_no_csp_errors, login, settle
from tests.support.engine import drain

pytestmark = pytest.mark.e2e

PHONE = {"width": 390, "height": 844}
TASKS = [
    {"id": "list_customer_accounts", "type": "noop",
     "with": {"value": [{"id": n, "region": "eu-west"} for n in range(12)]}},
    {"id": "check_each_account", "type": "noop", "depends_on": ["list_customer_accounts"],
     "for_each": "{{ tasks.list_customer_accounts.output }}", "with": {"value": "{{ item.id }}"}},
    {"id": "summarise", "type": "transform", "depends_on": ["check_each_account"],
     "with": {"value": "{{ tasks.check_each_account.output | length }}"}},
    {"id": "push_to_warehouse", "type": "fail", "depends_on": ["summarise"],
     "with": {"message": "the warehouse refused the batch: quota exceeded for "
                         "account-group-eu-west-0000000000000000000000000000000000000001"}},
    {"id": "notify_owners", "type": "noop",
     "depends_on": ["list_customer_accounts", "push_to_warehouse"], "trigger_rule": "all_done"},
]


@pytest.fixture()
def phone(browser: Any, live_server: str, console: ConsoleLog) -> Iterator[Any]:
    # Not is_mobile: a mobile layout viewport widens to fit its content, which would hide
    # the very overflow this looks for; the window stays 390 px wide here.
    context = browser.new_context(base_url=live_server, viewport=PHONE, has_touch=True)
    context.set_default_timeout(5000)
    pg = context.new_page()
    pg.on("console", console.on_console)
    pg.on("pageerror", console.on_page_error)
    pg.on("response", console.on_response)
    try:
        yield pg
    finally:
        context.close()


def overflow(page: Any) -> dict[str, Any]:
    """How wide the page is against the viewport, and what sticks out (for the message)."""
    return dict(page.evaluate("""() => {
        const width = window.innerWidth;
        const wide = Array.from(document.querySelectorAll('body *'))
          .filter(e => e.getBoundingClientRect().right > width + 1)
          .filter(e => !e.closest('.apg-graph-wrap, .CodeMirror'))
          .slice(0, 5)
          .map(e => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`);
        return {scroll: document.documentElement.scrollWidth, width: width, wide: wide};
    }"""))


def fits(page: Any, screenshots: Path, name: str | None = None) -> list[str]:
    """[] when the page is no wider than the viewport, else what is wrong; ``name``: the
    screenshot to save (docs/screenshots/ with APG_SAVE_SCREENSHOTS=1)."""
    settle(page)
    found = overflow(page)
    if name:
        page.screenshot(path=str(screenshots / name), full_page=True)
    return [] if found["scroll"] <= found["width"] else [f"{page.url} is too wide: {found}"]


def test_pages_fit_a_phone(
    app: Flask, phone: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    team = factory.team()
    author = factory.user("Author", teams=[team])
    client = app.test_client()
    headers = auth(api_token(client, author["username"]))
    r = client.post("/api/v1/workflows/", headers=headers, json={
        "team": team["name"],
        "definition": {"name": unique("account-health-check"),
                       "description": "Check every customer account, sum up, load the "
                                      "warehouse and tell the owners",
                       "tasks": TASKS}})
    assert r.status_code == 201, r.get_json()
    wid = r.get_json()["id"]
    run_id = client.post(f"/api/v1/workflows/{wid}/runs", headers=headers).get_json()["id"]
    assert drain(app, run_id) == "failed"

    login(phone, author["username"], author["password"])
    assert phone.evaluate("window.innerWidth") == 390
    problems: list[str] = []  # every page is checked before the test fails

    phone.goto("/workflows/list/")
    phone.locator(f'a.apg-workflow-link[href="/workflows/{wid}"]').wait_for()
    problems += fits(phone, screenshots, "phone_workflows.png")

    phone.goto(f"/workflows/{wid}")
    phone.locator("#workflow-graph .apg-node").first.wait_for()
    problems += fits(phone, screenshots, "phone_workflow_page.png")
    phone.locator("#run-workflow").click()  # the Run form, open
    phone.locator("#run-panel.collapse.in").wait_for()
    problems += fits(phone, screenshots)

    phone.goto(f"/workflows/{wid}/edit")
    phone.locator(".CodeMirror").wait_for()
    problems += fits(phone, screenshots)

    phone.goto(f"/runs/{run_id}?task=push_to_warehouse")
    phone.locator("#run-graph .apg-node.apg-st-failed").wait_for()
    items = phone.locator('#run-graph .apg-node[data-task="check_each_account"] .apg-node-items')
    assert items.text_content() == "for_each \u00b7 12 items"
    # The graph is wider than a phone: it scrolls inside its own box.
    wrap = phone.locator("#run-graph").locator("xpath=..")
    sizes = wrap.evaluate("w => [w.scrollWidth, w.clientWidth]")
    assert sizes[0] > sizes[1], sizes
    problems += fits(phone, screenshots, "phone_run_page.png")

    phone.goto("/runs/list/")
    phone.locator(f'tr.apg-run-row a[href="/runs/{run_id}"]').wait_for()
    problems += fits(phone, screenshots, "phone_runs_list.png")

    phone.goto("/failed_tasks/list/")
    phone.locator(f'tr.apg-failed-row[data-run="{run_id}"]').wait_for()
    problems += fits(phone, screenshots, "phone_failed_tasks.png")

    phone.goto("/")
    problems += fits(phone, screenshots, "phone_home.png")
    assert not problems, problems
    assert_no_csp_errors(console)
    errors = [e for e in console.errors if "favicon.ico" not in e]
    assert not errors, errors
