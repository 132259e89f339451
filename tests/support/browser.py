"""Driving Chromium in the browser tests: what a page logged, logging in, the menus,
waiting before a screenshot."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import TimeoutError as PlaywrightTimeout


class ConsoleLog:
    """Console errors, page errors and server errors (5xx) seen by one page."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.server_errors: list[str] = []

    def on_console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} @ {message.location}")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"pageerror: {error}")

    def on_response(self, response: Any) -> None:
        if response.status >= 500:
            self.server_errors.append(f"{response.status} {response.request.method} {response.url}")

    def csp_violations(self) -> list[str]:
        return [m for m in self.errors if "Content Security Policy" in m]


def login(page: Any, username: str, password: str) -> None:
    page.goto("/login/")
    form = page.locator("form[name=login]")
    # The form must carry a CSRF token (WTF_CSRF_ENABLED is on in the live app).
    assert form.locator("input[name=csrf_token]").get_attribute("value")
    form.locator("input[name=username]").fill(username)
    form.locator("input[name=password]").fill(password)
    with page.expect_navigation():
        form.locator("input[type=submit]").click()


def logout(page: Any) -> None:
    """Log out as a person does: the user menu's Logout button (a form POST with the
    CSRF token), opening the collapsed navbar first at phone width."""
    navbar = page.locator(".navbar")
    toggle = navbar.locator(".navbar-toggle")
    if toggle.is_visible():
        toggle.click()
        # Bootstrap's collapse animates ("collapsing"); a click on the user menu during
        # it can land while the menu moves and leave it closed.
        navbar.locator(".navbar-collapse.collapse.in").wait_for(state="visible")
    button = navbar.locator("#apg-logout")
    for _ in range(3):
        navbar.locator("a.dropdown-toggle:has(.fa-user)").click()
        try:
            button.wait_for(state="visible", timeout=2000)
            break
        except PlaywrightTimeout:  # the click closed what a slow first one opened
            continue
    with page.expect_navigation():
        button.click()


def open_menu(page: Any, category: str, item: str) -> None:
    navbar = page.locator(".navbar")
    navbar.locator("a.dropdown-toggle", has_text=re.compile(rf"^\s*{category}\s*$")).click()
    with page.expect_navigation():
        navbar.locator(".dropdown-menu a", has_text=re.compile(rf"^\s*{item}\s*$")).click()


def open_add_form(page: Any, category: str, item: str, view: str) -> Any:
    """Open a FAB model view from the menu, then its add form (with a CSRF token)."""
    open_menu(page, category, item)
    assert f"/{view}/list/" in page.url
    # Bootstrap's tooltip moves `title` away, so find the add button by its target.
    page.locator(f"a[href$='/{view}/add']").click()
    form = page.locator("form#model_form")
    assert form.locator("input[name=csrf_token]").get_attribute("value")
    return form


def settle(page: Any) -> None:
    """Wait for stylesheets and web fonts (icons) before a screenshot."""
    page.wait_for_load_state("load")
    page.evaluate("document.fonts.ready.then(() => true)")


def menu_categories(page: Any) -> list[str]:
    return [t.strip() for t in page.locator(".navbar a.dropdown-toggle").all_inner_texts()]


def assert_no_csp_errors(console: ConsoleLog) -> None:
    assert not console.csp_violations(), console.csp_violations()
    assert not console.server_errors, console.server_errors
