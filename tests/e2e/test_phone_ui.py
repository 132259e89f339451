"""End-to-end at phone width (390 x 844): the lists, a workflow's page (with its Run
form), the editor, a run's page and the home page, with real data, fit the screen.
Nothing may make the page wider than the viewport: the task graph scrolls inside its
own box, tables stack."""

from __future__ import annotations

import re
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

    # Triggers: a schedule (with a ledger row) and a webhook of the workflow.
    sched = client.post("/api/v1/schedules/", headers=headers, json={
        "workflow_id": wid, "cron": "30 2 * * *", "timezone": "Europe/Berlin",
        "description": "nightly health check"}).get_json()["id"]
    hook = client.post("/api/v1/webhooks/", headers=headers, json={
        "workflow_id": wid, "name": "crm-account-changed"}).get_json()
    assert client.post(hook["result"]["url"], json={}).status_code == 202
    phone.goto("/triggers/schedules/")
    phone.locator(f'tr[data-schedule-id="{sched}"]').wait_for()
    problems += fits(phone, screenshots, "phone_schedules.png")
    phone.goto(f"/triggers/schedules/{sched}")
    phone.locator("#next-fire tbody tr").first.wait_for()
    problems += fits(phone, screenshots, "phone_schedule_page.png")
    phone.goto("/triggers/schedules/new")
    phone.locator("#preview tbody tr").first.wait_for()
    problems += fits(phone, screenshots, "phone_schedule_form.png")
    phone.goto(f"/triggers/webhooks/{hook['id']}")
    phone.locator("#deliveries").wait_for()
    problems += fits(phone, screenshots, "phone_webhook_page.png")

    phone.goto("/")
    problems += fits(phone, screenshots, "phone_home.png")
    assert not problems, problems
    assert_no_csp_errors(console)
    errors = [e for e in console.errors if "favicon.ico" not in e]
    assert not errors, errors


def test_a_lockout_is_said_on_the_form_at_phone_width(
    phone: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    """The fifth wrong password (LOGIN_MAX_FAILURES) locks the account: the form says so
    at once, readable at 390 px, with how long to wait; the right password waits too."""
    user = factory.user("Viewer")
    phone.goto("/login/")
    form = phone.locator("form[name=login]")
    for attempt in range(5):
        form.locator("input[name=username]").fill(user["username"])
        form.locator("input[name=password]").fill(f"Wrong-Pass-{attempt}!")
        with phone.expect_navigation():
            form.locator("input[type=submit]").click()
    alert = phone.locator(".alert-danger", has_text="Too many failed logins")
    assert re.fullmatch(r"Too many failed logins for this account: try again in \d+ seconds\.",
                        alert.inner_text().replace("\u00d7", "").strip()), alert.inner_text()
    box = alert.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    assert not fits(phone, screenshots, "phone_login_lockout.png")

    form.locator("input[name=username]").fill(user["username"])
    form.locator("input[name=password]").fill(user["password"])
    with phone.expect_navigation():
        form.locator("input[type=submit]").click()
    assert "/login" in phone.url
    assert phone.locator(".alert-danger", has_text="Too many failed logins").is_visible()
    assert_no_csp_errors(console)


def test_a_refused_list_page_fits_and_leads_back(
    phone: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    """A list page asked for a negative page (an old link): the 400 page says why, in
    the layout's margins, and offers the same list without the bad options."""
    author = factory.user("Author", teams=[factory.team()])
    login(phone, author["username"], author["password"])
    response = phone.goto("/runs/list/?page_RunModelView=-1")
    assert response.status == 400
    error = phone.locator("#error-400")
    assert "page_RunModelView: must be between 0" in error.inner_text()
    heading = error.locator("h2").bounding_box()
    assert heading and heading["x"] >= 10, heading  # not against the screen's edge
    assert not fits(phone, screenshots, "phone_error_400.png")
    phone.set_viewport_size({"width": 1280, "height": 800})
    settle(phone)
    phone.screenshot(path=str(screenshots / "error_400.png"))
    phone.set_viewport_size(PHONE)
    with phone.expect_navigation():
        phone.locator("#error-retry-plain").click()
    assert phone.url.endswith("/runs/list/")
    assert phone.locator("#error-400").count() == 0
    assert not console.server_errors, console.server_errors


def test_a_cut_output_at_phone_width(
    app: Flask, phone: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    """An output over 64 KiB of JSON: its size (readable), the start, a link to the whole;
    the attempt's card has no empty Error line."""
    team = factory.team()
    author = factory.user("Author", teams=[team])
    client = app.test_client()
    headers = auth(api_token(client, author["username"]))
    r = client.post("/api/v1/workflows/", headers=headers, json={
        "team": team["name"], "definition": {"name": unique("report"), "tasks": [
            {"id": "render", "type": "transform",
             "with": {"value": "{{ 'abcdefghij' * 10000 }}"}}]}})
    run_id = client.post(f"/api/v1/workflows/{r.get_json()['id']}/runs",
                         headers=headers).get_json()["id"]
    assert drain(app, run_id) == "succeeded"
    login(phone, author["username"], author["password"])
    phone.goto(f"/runs/{run_id}?task=render")
    panel = phone.locator("#task-render")
    cut = panel.locator(".apg-output-cut")
    assert cut.locator(".apg-output-size").inner_text() == "100,002"
    assert cut.locator(".apg-output-whole").get_attribute("href") == (
        f"/api/v1/runs/{run_id}/tasks/render/output")
    attempt = panel.locator(".apg-attempts tbody tr").first
    assert attempt.locator("td.apg-attempt-error").is_hidden()
    assert attempt.locator("td", has_text="succeeded").is_visible()
    cut.scroll_into_view_if_needed()
    settle(phone)
    assert not fits(phone, screenshots)
    phone.screenshot(path=str(screenshots / "phone_run_output_cut.png"))
    assert_no_csp_errors(console)
