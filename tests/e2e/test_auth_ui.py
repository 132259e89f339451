"""End-to-end: logging out is a form POST from the user menu (also at phone width), a
GET of /logout/ only asks, and Swagger's "Try it out" mutates with the session (it
sends the CSRF token)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.app import unique
from tests.support.browser import ConsoleLog, assert_no_csp_errors, login, logout, settle

pytestmark = pytest.mark.e2e


def _logged_out(page: Any) -> bool:
    page.goto("/audit/list/")
    return "/login" in page.url


def test_logout_from_the_user_menu_and_a_get_only_asks(
    page: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    admin = factory.user("Admin")
    login(page, admin["username"], admin["password"])
    page.goto("/logout/")
    assert page.locator("form[name=logout] input[name=csrf_token]").get_attribute("value")
    page.set_viewport_size({"width": 1280, "height": 800})
    settle(page)
    page.screenshot(path=str(screenshots / "logout_confirm.png"))
    page.goto("/")
    assert page.locator("#home-user").inner_text() == admin["username"]

    logout(page)
    assert _logged_out(page)
    assert_no_csp_errors(console)


def test_logout_at_phone_width(browser: Any, live_server: str, factory: Any) -> None:
    console = ConsoleLog()
    context = browser.new_context(base_url=live_server, viewport={"width": 390, "height": 844},
                                  has_touch=True)
    context.set_default_timeout(5000)
    page = context.new_page()
    page.on("console", console.on_console)
    page.on("response", console.on_response)
    try:
        viewer = factory.user("Viewer")
        login(page, viewer["username"], viewer["password"])
        logout(page)
        assert _logged_out(page)
        assert_no_csp_errors(console)
    finally:
        context.close()


def test_the_failure_that_locks_an_account_says_so_on_the_form(
    page: Any, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    """LOGIN_MAX_FAILURES (5) wrong passwords: the fifth answer already says the account
    is locked and for how long, next to "Invalid login" (not after one more try)."""
    user = factory.user("Viewer")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto("/login/")
    form = page.locator("form[name=login]")
    answers = []
    for attempt in range(5):
        form.locator("input[name=username]").fill(user["username"])
        form.locator("input[name=password]").fill(f"Wrong-Pass-{attempt}!")
        with page.expect_navigation() as navigation:
            form.locator("input[type=submit]").click()
        answers.append(navigation.value.status)
    assert answers == [200, 200, 200, 200, 429], answers  # 200: the form after a redirect
    alerts = [a.replace("\u00d7", "").strip()
              for a in page.locator(".alert").all_inner_texts()]
    assert alerts[0] == "Invalid login. Please try again.", alerts
    assert re.fullmatch(r"Too many failed logins for this account: try again in \d+ seconds\.",
                        alerts[1]), alerts
    settle(page)
    page.screenshot(path=str(screenshots / "login_lockout.png"))
    assert_no_csp_errors(console)


def test_swagger_try_it_out_creates_with_the_session(
    page: Any, factory: Any, console: ConsoleLog
) -> None:
    admin = factory.user("Admin")
    login(page, admin["username"], admin["password"])
    page.goto("/swagger/v1")
    # The OpenAPI document is large: on a busy machine it takes a while to draw.
    page.wait_for_selector(".opblock", timeout=30_000)
    block = page.locator(
        ".opblock-post:has(.opblock-summary-path[data-path='/api/v1/teams/'])").first
    block.locator(".opblock-summary").click()
    block.locator("button.try-out__btn").click()
    block.locator("textarea").first.fill(json.dumps({"name": unique("swagger-team")}))
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "201", block.inner_text()[:2000]
    assert_no_csp_errors(console)
