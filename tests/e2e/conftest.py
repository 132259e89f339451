"""Browser fixtures: a live server on a real port and a headless Chromium.

The live app is a separate application (CSRF ON, as in production) on the same
database and Redis as the session ``app`` fixture, so ``factory`` users can log in.
Chromium is Debian's package; a missing browser fails the suite, it never skips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.support.app import make_config, serving
from tests.support.browser import ConsoleLog

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(scope="session")
def live_server(app: Flask, service_urls: dict[str, str]) -> Iterator[str]:
    """Serve a CSRF-enabled app on 127.0.0.1:<free port>; yields its base URL."""
    from app import create_app

    # ``app`` is requested first: it runs the migrations this app starts on.
    live = create_app(make_config(service_urls, WTF_CSRF_ENABLED=True))
    assert live.config["WTF_CSRF_ENABLED"] is True
    with serving(live, "e2e-live-server") as url:
        yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run `apt-get install -y chromium` "
            "(never `playwright install`)",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture()
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture()
def page(browser: Any, live_server: str, console: ConsoleLog) -> Iterator[Any]:
    context = browser.new_context(base_url=live_server, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(5000)
    pg = context.new_page()
    pg.on("console", console.on_console)
    pg.on("pageerror", console.on_page_error)
    pg.on("response", console.on_response)
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/screenshots/ when APG_SAVE_SCREENSHOTS=1 (to refresh the committed ones),
    else a temporary folder, so a test run leaves the work tree as it was."""
    if os.environ.get("APG_SAVE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")
