"""End-to-end, Workflows -> Templates: an Author searches and filters the gallery, opens
a template (its graph drawn, its definition shown), uses it and lands on the new
workflow; a Viewer sees the gallery without the "Use template" form. Real Chromium, at
desktop and phone width."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from capability.templates import service as templates
from tests.support.browser import ConsoleLog, assert_no_csp_errors, login, open_menu, settle

pytestmark = pytest.mark.e2e
PHONE = {"width": 390, "height": 844}


def test_search_filter_preview_and_use(page: Any, factory: Any, console: ConsoleLog,
                                       screenshots: Path) -> None:
    team = factory.team()
    author = factory.user("Author", teams=[team])
    login(page, author["username"], author["password"])
    open_menu(page, "Workflows", "Templates")
    assert page.url.rstrip("/").endswith("/templates")
    total = len(templates.library())
    expect(page.locator(".apg-template-card")).to_have_count(total)
    settle(page)
    page.screenshot(path=str(screenshots / "templates_gallery.png"))

    # Search, then a category on top of it.
    page.locator("#template-search").fill("postgres")
    with page.expect_navigation():
        page.locator("#template-filter-go").click()
    cards = page.locator(".apg-template-card")
    assert 3 <= cards.count() < total
    page.locator("#template-category").select_option("etl-postgres")
    with page.expect_navigation():
        page.locator("#template-filter-go").click()
    expect(page.locator("#template-postgres-daily-rollup")).to_be_visible()
    expect(page.locator("#template-postgres-to-s3-export")).to_have_count(0)
    page.locator("#template-search").fill("no such template at all")
    with page.expect_navigation():
        page.locator("#template-filter-go").click()
    expect(page.locator("#no-template")).to_be_visible()
    with page.expect_navigation():
        page.locator("#template-filter-clear").click()

    # Preview: the graph is drawn (one node per task) and the definition shown.
    with page.expect_navigation():
        page.locator("#template-approval-gated-deploy").click()
    tasks = len(templates.library()["approval-gated-deploy"].definition["tasks"])
    expect(page.locator("#workflow-graph g.apg-node")).to_have_count(tasks)
    expect(page.locator("#template-page .CodeMirror")).to_contain_text("type: approval")
    expect(page.locator("#template-connections")).to_contain_text("deploy_api")
    settle(page)
    page.screenshot(path=str(screenshots / "template_preview.png"), full_page=True)

    # Use it: lands on the new workflow's page.
    page.locator("#use-name").fill("deploy-checkout")
    with page.expect_navigation():
        page.locator("#use-template").click()
    expect(page.locator("#workflow-name")).to_have_text("deploy-checkout")
    expect(page.locator("#workflow-version")).to_have_text("v1")
    # The same name again: the form says why, nothing else is created.
    page.goto("/templates/approval-gated-deploy")
    page.locator("#use-name").fill("deploy-checkout")
    page.locator("#use-template").click()
    expect(page.locator("#use-errors")).to_contain_text("already has a workflow")

    page.set_viewport_size(PHONE)
    page.goto("/templates/")
    settle(page)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
    page.screenshot(path=str(screenshots / "phone_templates_gallery.png"))
    assert_no_csp_errors(console)


def test_a_viewer_browses_without_the_use_form(page: Any, factory: Any) -> None:
    team = factory.team()
    viewer = factory.user("Viewer", teams=[team])
    login(page, viewer["username"], viewer["password"])
    page.goto("/templates/llm-ticket-triage")
    expect(page.locator("#template-title")).to_contain_text("Classify support tickets")
    expect(page.locator("#use-template-panel")).to_have_count(0)
