"""End-to-end: a real Chromium drives the real login form, menus and forms of a live
server with CSRF on, and every page loads without a Content-Security-Policy block."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.support.app import api_token, auth, unique
from tests.support.browser import (
    ConsoleLog,
    assert_no_csp_errors,
    login,
    logout,
    menu_categories,
    open_add_form,
    open_menu,
    settle,
)

pytestmark = pytest.mark.e2e


def test_admin_logs_in_and_sees_own_login_in_audit_trail(
    page: Any, live_server: str, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    admin = factory.user("Admin")
    login(page, admin["username"], admin["password"])

    assert page.url == f"{live_server}/"  # the home page
    assert page.locator("#home-user").inner_text() == admin["username"]
    settle(page)
    page.screenshot(path=str(screenshots / "home.png"), full_page=True)

    open_menu(page, "Audit", "Audit trail")
    assert "/audit/list/" in page.url
    row = page.locator("table tr", has_text=admin["username"]).filter(
        has=page.locator("td", has_text=re.compile(r"^\s*login\s*$"))
    )
    assert row.count() >= 1, page.locator("table").inner_text()
    assert "success" in row.first.inner_text()
    settle(page)
    # The viewport only: the full page is 50 rows long.
    page.screenshot(path=str(screenshots / "audit_trail.png"))
    assert_no_csp_errors(console)


def test_wrong_password_is_refused_and_audited_as_denied(
    page: Any, app: Flask, factory: Any, console: ConsoleLog
) -> None:
    victim = factory.user("Viewer")
    login(page, victim["username"], "Wrong-Pass-999!")

    assert "/login" in page.url
    assert page.locator(".alert", has_text="Invalid login").is_visible()
    assert page.locator("#home-user").count() == 0
    # Still anonymous: a protected page sends the browser back to the login form.
    page.goto("/audit/list/")
    assert "/login" in page.url
    assert_no_csp_errors(console)

    admin = factory.user("Admin")
    client = app.test_client()
    token = api_token(client, admin["username"])
    response = client.get(
        "/api/v1/audit/",
        query_string={"actor": victim["username"], "action": "login"},
        headers=auth(token),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    rows = response.get_json()["result"]
    assert [r["outcome"] for r in rows] == ["denied"], rows


def test_menus_follow_roles(page: Any, factory: Any, console: ConsoleLog) -> None:
    auditor = factory.user("Auditor")
    login(page, auditor["username"], auditor["password"])
    assert page.locator("#home-user").inner_text() == auditor["username"]
    categories = menu_categories(page)
    assert "Audit" in categories and "Security" not in categories, categories
    open_menu(page, "Audit", "Audit trail")
    assert "/audit/list/" in page.url

    logout(page)
    viewer = factory.user("Viewer")
    login(page, viewer["username"], viewer["password"])
    assert page.locator("#home-user").inner_text() == viewer["username"]
    assert "Audit" not in menu_categories(page)
    assert_no_csp_errors(console)


def test_admin_creates_team_through_form(
    page: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    admin = factory.user("Admin")
    login(page, admin["username"], admin["password"])

    form = open_add_form(page, "Security", "Teams", "teamview")
    name = unique("e2e-team")
    form.locator("input[name=name]").fill(name)
    with page.expect_navigation():
        form.locator("button[type=submit]").click()

    assert "/teamview/list/" in page.url, page.content()
    assert page.locator(".alert-success").is_visible(), page.locator(".alert").all_inner_texts()
    assert page.locator("table td", has_text=name).count() == 1
    settle(page)
    page.screenshot(path=str(screenshots / "teams.png"), full_page=True)

    open_menu(page, "Security", "Capabilities")
    assert "/capabilities/" in page.url
    assert page.locator("#capabilities td code", has_text="platform").count() == 1
    settle(page)
    page.screenshot(path=str(screenshots / "capabilities.png"), full_page=True)
    assert_no_csp_errors(console)


def test_team_screens_choose_nobody_go_back_and_explain_a_refused_delete(
    app: Flask, page: Any, factory: Any, console: ConsoleLog
) -> None:
    from tests.support.pages import make_workflow, start

    admin = factory.user("Admin")
    factory.user("Viewer")
    team = factory.team()
    api = app.test_client()
    headers = auth(api_token(api, admin["username"]))
    start(api, headers, make_workflow(api, headers, team["name"], [{"id": "a", "type": "noop"}]))
    login(page, admin["username"], admin["password"])

    # Add Team Membership: nobody chosen until the user chooses.
    page.goto(f"/teamview/show/{team['id']}")
    page.goto("/teammembershipview/add")
    assert page.locator("select#user").evaluate("e => e.value") == "__None"
    assert "Choose a user" in page.locator("#s2id_user, .select2-container").nth(1).inner_text()
    with page.expect_navigation():
        page.locator("form#model_form button[type=submit]").click()
    assert "This field is required." in page.locator("form#model_form").inner_text()

    # Saving a team lands on the teams list it was opened from, not the tenants list.
    open_menu(page, "Security", "Tenants")
    open_menu(page, "Security", "Teams")
    page.locator(f"a[href*='/teamview/edit/{team['id']}']").first.click()
    page.wait_for_url(f"**/teamview/edit/{team['id']}")
    with page.expect_navigation():
        page.locator("form#model_form button[type=submit]").click()
    assert page.url.endswith("/teamview/list/"), page.url

    # Deleting it is refused in words; the row stays.
    page.locator("tr", has_text=team["name"]).locator("a[id^='btn-delete-']").click()
    page.locator("#modal-confirm").wait_for(state="visible")
    with page.expect_navigation():
        page.locator("#modal-confirm-ok").click()
    assert page.url.endswith("/teamview/list/"), page.url
    alert = page.locator(".alert-danger").inner_text()
    assert (f"Team '{team['name']}' still owns 1 workflow and 1 run: delete or move them first"
            in alert), alert
    assert page.locator("table td", has_text=team["name"]).count() == 1
    assert_no_csp_errors(console)


def test_swagger_try_it_out_works_with_its_prefilled_example(
    page: Any, factory: Any, console: ConsoleLog
) -> None:
    admin = factory.user("Admin")
    factory.team()
    login(page, admin["username"], admin["password"])
    page.goto("/swagger/v1")
    page.wait_for_selector(".opblock")
    for path in ("/api/v1/workflows/", "/api/v1/runs/", "/api/v1/teams/"):
        block = page.locator(
            f".opblock-get:has(.opblock-summary-path[data-path='{path}'])").first
        block.locator(".opblock-summary").click()
        block.locator("button.try-out__btn").click()
        prefilled = block.locator("textarea").first.input_value()
        assert '"order_column"' in prefilled and "select_columns" not in prefilled, prefilled
        block.locator("button.execute").click()
        status = block.locator(".live-responses-table tbody .response-col_status").first
        status.wait_for()
        assert status.inner_text().strip() == "200", (path, block.inner_text()[:2000])
    assert_no_csp_errors(console)
