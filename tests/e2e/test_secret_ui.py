"""End-to-end: an Admin opens Security -> Secrets, adds a secret of a team through the
form (a password input), sees it listed without its value, sets a new value and
deletes it after the confirmation dialog, in a real Chromium with CSRF on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.security.actor import SYSTEM
from capability.secrets import service as secrets
from tests.support.app import unique
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


def add_secret(app: Flask, team: dict[str, Any], name: str) -> None:
    with app.app_context():
        secrets.create_secret(db.session, SYSTEM, app.config, secrets.SecretIn(
            team=f"{team['tenant']}/{team['name']}", name=name, value=unique("value")))
        db.session.remove()


def test_admin_adds_a_secret_and_sees_it_listed(
    app: Flask, page: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    team = factory.team(name=unique("payments"))
    # Something else to look at in the screenshot.
    add_secret(app, team, "api_token")
    add_secret(app, factory.team(name=unique("mailing")), "smtp_password")
    admin = factory.user("Admin")
    login(page, admin["username"], admin["password"])

    form = open_add_form(page, "Security", "Secrets", "secrets")
    value_input = form.locator("input[name=value]")
    assert value_input.get_attribute("type") == "password"
    # FAB's select2 keeps the real <select> (hidden) in the form.
    form.locator("select[name=team]").select_option(value=team["id"], force=True)
    name = "warehouse_token"
    value = "wh-" + unique("token")
    form.locator("input[name=name]").fill(name)
    value_input.fill(value)
    with page.expect_navigation():
        form.locator("button[type=submit]").click()

    assert "/secrets/list/" in page.url, page.content()
    assert page.locator(".alert-success").is_visible(), page.locator(".alert").all_inner_texts()
    # Other tests leave secrets behind: list the team's only (FAB's relation filter).
    page.goto(f"/secrets/list/?_flt_0_team={team['id']}")
    row = page.locator("table tr", has_text=name).filter(has_text=team["name"])
    assert row.count() == 1
    assert admin["username"] in row.inner_text()
    assert value not in page.content()
    settle(page)
    page.screenshot(path=str(screenshots / "secrets.png"), full_page=True)

    # A new value: the form shows which secret, and an empty password input.
    row.locator("a[href*='/secrets/edit/']").click()
    edit = page.locator("form#model_form")
    assert name in (edit.locator("input[name=secret]").get_attribute("value") or "")
    assert edit.locator("input[name=value]").input_value() == ""
    assert value not in page.content()
    edit.locator("input[name=value]").fill(value + "-2")
    with page.expect_navigation():
        edit.locator("button[type=submit]").click()
    assert page.locator(".alert-success", has_text="New value saved").is_visible()
    assert value not in page.content()

    # Delete: FAB's confirmation dialog, then a POST with the CSRF token.
    row = page.locator("table tr", has_text=name).filter(has_text=team["name"])
    row.locator("a.confirm").click()
    dialog = page.locator("#modal-confirm")
    dialog.wait_for(state="visible")
    with page.expect_navigation():
        dialog.locator("#modal-confirm-ok").click()
    assert page.locator(".alert-success", has_text="deleted").is_visible()
    assert page.locator("table tr", has_text=name).filter(has_text=team["name"]).count() == 0
    assert_no_csp_errors(console)


def test_an_author_has_the_secrets_menu_entry_and_the_auditor_not(
        page: Any, factory: Any, console: ConsoleLog) -> None:
    author = factory.user("Author", teams=[factory.team()])
    login(page, author["username"], author["password"])
    open_menu(page, "Security", "Secrets")
    assert "/secrets/list/" in page.url
    assert not console.csp_violations(), console.csp_violations()
    logout(page)
    auditor = factory.user("Auditor")
    login(page, auditor["username"], auditor["password"])
    assert page.locator(".navbar a[href='/secrets/list/']").count() == 0
    assert "Security" not in menu_categories(page)
    response = page.goto("/secrets/list/")
    assert response is not None and response.status == 403
    assert not console.csp_violations(), console.csp_violations()
