"""End-to-end, Workflows -> Connections: an Author picks a type, fills the form made from
its model (a SQLite file), sees a field error first, saves, tests it (a real round
trip, the answer flashed), edits it without retyping the secret, and deletes it; a
Viewer of the team sees it without the buttons. Real Chromium, CSRF on, at desktop and
phone width."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect

from tests.support.app import Factory, unique
from tests.support.browser import ConsoleLog, assert_no_csp_errors, login, open_menu, settle

pytestmark = pytest.mark.e2e
PHONE = {"width": 390, "height": 844}


def test_create_test_edit_and_delete_a_connection(app: Flask, page: Any, factory: Factory,
                                                  console: ConsoleLog,
                                                  screenshots: Path) -> None:
    team = factory.team(name=unique("data"))
    author = factory.user("Author", teams=[team])
    viewer = factory.user("Viewer", teams=[team])
    files = Path(app.config["CONNECTION_FILES_DIR"])
    files.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(files / f"{team['name']}.db").close()

    login(page, author["username"], author["password"])
    open_menu(page, "Workflows", "Connections")
    assert "/connections/" in page.url
    page.locator("#new-connection").click()
    page.locator("#type-sqlite").click()
    form = page.locator("#connection-form")
    form.locator("input[name=name]").fill("Bad Name")
    form.locator("input[name='config.path']").fill(f"{team['name']}.db")
    form.locator("#save-connection").click()
    expect(page.locator("#form-errors")).to_contain_text("name")
    page.locator("#connection-form input[name=name]").fill("reports")
    page.locator("#save-connection").click()
    row = page.locator("#connection-reports")
    expect(row).to_contain_text("sqlite")
    expect(row.locator(".apg-breaker")).to_have_text("closed")
    row.locator(".apg-test").click()
    expect(page.locator(".alert-success")).to_contain_text("Test answered")
    expect(page.locator(".alert-success")).to_contain_text("SQLite")
    settle(page)
    page.screenshot(path=str(screenshots / "connections.png"), full_page=True)

    # A postgres form: its secret is a password input, never filled back.
    page.locator("#new-connection").click()
    page.locator("#type-postgres").click()
    form = page.locator("#connection-form")
    form.locator("input[name=name]").fill("warehouse")
    form.locator("input[name='config.host']").fill("db.example")
    form.locator("input[name='config.database']").fill("dw")
    form.locator("input[name='config.username']").fill("etl")
    form.locator("input[name='secret.password']").fill("pw-UI-SECRET")
    settle(page)
    page.screenshot(path=str(screenshots / "connection_form.png"), full_page=True)
    form.locator("#save-connection").click()
    row = page.locator("#connection-warehouse")
    expect(row).to_contain_text("password ***")
    assert "pw-UI-SECRET" not in page.content()
    row.get_by_role("link", name="Edit").click()
    expect(page.locator("input[name='secret.password']")).to_have_value("")
    page.locator("input[name='config.database']").fill("dw2")
    page.locator("#save-connection").click()
    expect(page.locator(".alert-success")).to_contain_text("saved")
    expect(page.locator("#connection-warehouse")).to_contain_text("password ***")
    asked: list[str] = []

    def confirm(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", confirm)
    page.locator("#connection-warehouse").get_by_role("button", name="Delete").click()
    expect(page.locator("#connection-warehouse")).to_have_count(0)
    assert asked and "Delete connection warehouse?" in asked[0]

    page.set_viewport_size(PHONE)
    page.goto("/connections/")
    settle(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
    page.screenshot(path=str(screenshots / "phone_connections.png"), full_page=True)
    for path, shot in (("/connections/new", "phone_connection_types.png"),
                       ("/connections/new?type=smtp", "phone_connection_form.png")):
        page.goto(path)
        settle(page)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (path, width)
        page.screenshot(path=str(screenshots / shot), full_page=True)
    assert_no_csp_errors(console)

    page.context.clear_cookies()
    login(page, viewer["username"], viewer["password"])
    page.goto("/connections/")
    expect(page.locator("#connection-reports")).to_be_visible()
    expect(page.locator("#connection-reports .apg-test")).to_have_count(0)
    expect(page.locator("#new-connection")).to_have_count(0)
