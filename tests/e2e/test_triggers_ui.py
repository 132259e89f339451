"""End-to-end, Triggers menu: an Author creates a schedule and sees its next fire times
as they type, pauses it from its page; creates a webhook, copies its URL, calls it
signed as GitHub would, and watches the delivery and its run appear. Real Chromium,
CSRF on, at desktop width (the phone width is covered by test_phone_ui)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from playwright.sync_api import expect

from app.extensions import db
from app.security.actor import SYSTEM
from capability.secrets import service as secrets
from tests.support.app import Factory, unique
from tests.support.browser import ConsoleLog, assert_no_csp_errors, login, open_menu, settle

pytestmark = pytest.mark.e2e


def _workflow(app: Flask, factory: Factory) -> tuple[dict[str, Any], dict[str, Any], str]:
    from capability import service

    team = factory.team(name=unique("ops"))
    author = factory.user("Author", teams=[team])
    with app.app_context():
        wid = service.create_workflow(db.session, SYSTEM, f"{team['tenant']}/{team['name']}",
                                      service.read_source({
                                          "name": unique("nightly-export"),
                                          "params": {"repo": {"type": "string"}},
                                          "tasks": [{"id": "a", "type": "noop"}]})).id
        db.session.remove()
    return team, author, wid


def test_a_schedule_with_its_live_preview(app: Flask, page: Any, factory: Factory,
                                          console: ConsoleLog, screenshots: Path) -> None:
    _, author, wid = _workflow(app, factory)
    login(page, author["username"], author["password"])
    open_menu(page, "Triggers", "Schedules")
    assert "/triggers/schedules/" in page.url
    page.locator("#new-schedule").click()
    form = page.locator("#schedule-form")
    form.locator("select[name=workflow_id]").select_option(value=wid)
    form.locator("input[name=cron]").fill("30 2 * * *")
    form.locator("input[name=timezone]").fill("Europe/Berlin")
    rows = page.locator("#preview tbody tr")
    # Five rows, in Berlin time (+01:00 or +02:00), once the zone's preview is in.
    expect(rows).to_have_count(5)
    expect(rows.first.locator("td").first).to_have_text(re.compile(r"\+0[12]:00$"))
    first = rows.first.locator("td").all_inner_texts()
    assert re.match(r"\d{4}-\d\d-\d\d 02:30 \+0[12]:00$", first[0]), first
    assert re.match(r"\d{4}-\d\d-\d\d 0[01]:30 UTC$", first[1]), first
    # A typo is said at once, under the preview.
    form.locator("input[name=cron]").fill("61 2 * * *")
    page.locator("#preview-error").wait_for(state="visible")
    assert "cron" in page.locator("#preview-error").inner_text()
    form.locator("input[name=cron]").fill("30 2 * * *")
    expect(page.locator("#preview-error")).to_be_hidden()
    expect(rows).to_have_count(5)
    form.locator("input[name=description]").fill("nightly export")
    settle(page)
    page.screenshot(path=str(screenshots / "schedule_form.png"), full_page=True)
    with page.expect_navigation():
        page.locator("#save-schedule").click()
    assert "/triggers/schedules/" in page.url, page.url
    assert page.locator(".alert-success").is_visible()
    assert page.locator("#next-fire tbody tr").count() == 5
    assert "No tick decided yet" in page.locator("#no-ticks").inner_text()
    with page.expect_navigation():
        page.locator("#toggle-pause").click()
    assert page.locator("#schedule-paused").is_visible()
    # A backfill: counted first, confirmed, then followed.
    page.locator("#backfill-start").fill("2027-01-01T00:00")
    page.locator("#backfill-end").fill("2027-01-03T23:59")
    page.locator("#backfill-count").click()
    expect(page.locator("#backfill-message")).to_have_text(
        "3 runs will be created, one per tick.")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#backfill-start-button").click()
    expect(page.locator("#backfill-message")).to_contain_text("of 3 started")
    settle(page)
    page.screenshot(path=str(screenshots / "schedule_page.png"), full_page=True)
    open_menu(page, "Triggers", "Schedules")
    assert "paused" in page.locator("#schedules").inner_text()
    assert_no_csp_errors(console)


def test_a_webhook_called_signed_starts_a_run(app: Flask, page: Any, factory: Factory,
                                              console: ConsoleLog, screenshots: Path) -> None:
    team, author, wid = _workflow(app, factory)
    secret = "gh-" + unique("secret")
    with app.app_context():
        secrets.create_secret(db.session, SYSTEM, app.config, secrets.SecretIn(
            team=f"{team['tenant']}/{team['name']}", name="gh_hook", value=secret))
        db.session.remove()
    login(page, author["username"], author["password"])
    open_menu(page, "Triggers", "Webhooks")
    page.locator("#new-webhook").click()
    form = page.locator("#webhook-form")
    form.locator("select[name=workflow_id]").select_option(value=wid)
    form.locator("input[name=name]").fill("github-push")
    form.locator("select[name=scheme]").select_option(value="github")
    form.locator("input[name=secret]").fill("gh_hook")
    form.locator("textarea[name=params]").fill('{"repo": "{{ body.repository.full_name }}"}')
    with page.expect_navigation():
        page.locator("#save-webhook").click()
    url = page.locator("#hook-url").input_value()
    assert re.search(r"/hooks/[A-Za-z0-9_-]{40,}$", url), url
    assert "X-Hub-Signature-256" in page.locator("#curl-example").input_value()
    settle(page)
    page.screenshot(path=str(screenshots / "webhook_created.png"), full_page=True)
    # What the curl example does, as a sender would.
    body = json.dumps({"ref": "refs/heads/main", "repository": {"full_name": "acme/api"}})
    signature = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    r = requests.post(url, data=body, timeout=10, headers={
        "Content-Type": "application/json", "X-GitHub-Event": "push",
        "X-GitHub-Delivery": unique("d"), "X-Hub-Signature-256": f"sha256={signature}"})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    bad = requests.post(url, data=body, timeout=10, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": "sha256=00"})
    assert bad.status_code == 401
    with page.expect_navigation():
        page.locator("#to-webhook").click()
    deliveries = page.locator("#deliveries").inner_text()
    assert "accepted" in deliveries and "denied" in deliveries
    assert "/hooks/" in page.locator("#hook-url-short").inner_text()
    settle(page)
    page.screenshot(path=str(screenshots / "webhook_page.png"), full_page=True)
    with page.expect_navigation():
        page.locator(f"#deliveries a[href$='{run_id}']").click()
    assert run_id in page.url
    assert "its webhook" in page.locator("#run-trigger").inner_text()
    assert_no_csp_errors(console)


def test_an_event_trigger_from_the_form(app: Flask, page: Any, factory: Factory,
                                        console: ConsoleLog, screenshots: Path) -> None:
    _, author, wid = _workflow(app, factory)
    login(page, author["username"], author["password"])
    open_menu(page, "Triggers", "Event triggers")
    page.locator("#new-event-trigger").click()
    form = page.locator("#event-trigger-form")
    form.locator("select[name=workflow_id]").select_option(value=wid)
    form.locator("#kind-event").check()
    form.locator("input[name=event]").fill("Bad Name")
    with page.expect_navigation():
        page.locator("#save-event-trigger").click()
    assert "event" in page.locator("#form-errors").inner_text()  # refused, said, kept
    form.locator("input[name=event]").fill("invoice.created")
    form.locator("textarea[name=params]").fill('{"repo": "{{ event.payload.repo }}"}')
    with page.expect_navigation():
        page.locator("#save-event-trigger").click()
    assert page.locator(".alert-success").is_visible()
    row = page.locator("#event-triggers tbody tr", has_text="invoice.created")
    assert row.count() == 1
    settle(page)
    page.screenshot(path=str(screenshots / "event_triggers.png"), full_page=True)
    assert_no_csp_errors(console)
