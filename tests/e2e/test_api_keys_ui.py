"""End-to-end: an Author opens API keys from the user menu, makes a key (shown once, with
a copy button), the key works against the API, and revoking it on the page stops it —
in a real Chromium with CSRF on, at desktop and phone width."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.support.app import unique
from tests.support.browser import ConsoleLog, assert_no_csp_errors, login

pytestmark = pytest.mark.e2e


def test_an_author_makes_uses_and_revokes_a_key(
    page: Any, live_server: str, factory: Any, console: ConsoleLog, screenshots: Path
) -> None:
    team = factory.team(name=unique("data-eng"))
    factory.team(name=unique("billing"))
    author = factory.user("Author", teams=[team])
    login(page, author["username"], author["password"])

    page.locator(".navbar-right .dropdown-toggle").last.click()
    page.locator("#apg-api-keys").click()
    expect(page.locator("h2")).to_have_text("API keys")
    expect(page.locator("#no-keys")).to_be_visible()
    # Only the user's own teams are offered.
    options = page.locator("#key-teams option").all_inner_texts()
    assert options == [team["name"]]

    page.locator("#key-name").fill("ci-deployer")
    page.locator("input[name=scopes][value=run]").check()
    page.locator("#key-ips").fill("127.0.0.1, 10.0.0.0/8")
    page.locator("#key-expires").fill("2030-06-30T00:00")
    with page.expect_navigation():
        page.locator("#key-create").click()
    token = page.locator("#new-key-value").input_value()
    assert token.startswith("apk_")
    row = page.locator("#keys tbody tr").first
    expect(row).to_contain_text("ci-deployer")
    expect(row).to_contain_text("read, run")
    expect(row).to_contain_text("2030-06-30")
    page.locator("[data-copy='#new-key-value']").click()
    expect(page.locator("[data-copy='#new-key-value']")).to_contain_text("Copied")
    page.screenshot(path=str(screenshots / "api_keys_created.png"), full_page=True)

    used = requests.get(f"{live_server}/api/v1/workflows/",
                        headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert used.status_code == 200 and used.headers["X-RateLimit-Limit"]

    # Shown once: the page opened again lists the key without it.
    page.goto("/api-keys/")
    assert token not in page.content()
    expect(page.locator("#keys tbody tr").first).to_contain_text("from 127.0.0.1")

    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(screenshots / "phone_api_keys.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})

    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.locator("#keys tbody tr").first.locator("button", has_text="Revoke").click()
    expect(page.locator(".alert-success")).to_contain_text("revoked")
    expect(page.locator("#keys tbody tr").first).to_contain_text("revoked")
    refused = requests.get(f"{live_server}/api/v1/workflows/",
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert refused.status_code == 401

    # A bad address list is refused in place, the other fields kept.
    page.locator("#key-name").fill("bad-ips")
    page.locator("#key-ips").fill("not-an-address")
    with page.expect_navigation():
        page.locator("#key-create").click()
    expect(page.locator("#key-errors")).to_contain_text("not an IP address")
    expect(page.locator("#key-name")).to_have_value("bad-ips")
    assert_no_csp_errors(console)
