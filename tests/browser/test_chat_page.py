"""The chat page in a real browser (Debian's Chromium, headless) against the running stack:
a user types, the reply streams in token by token, and the conversation carries on."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, sync_playwright

from infra.settings import settings
from ingest_api.auth import issue_token
from schemas.events import new_id

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium's background services try the internet, which this machine cannot reach.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def send(page: Page, text: str, model: str) -> str:
    """Type a message, press Send, and return the reply once the page has streamed all of it."""
    replies = page.locator(".assistant").count()
    page.select_option("#model", model)
    page.fill("#content", text)
    page.click("form button")
    page.wait_for_function(f"document.querySelectorAll('.assistant').length === {replies + 1}")
    page.wait_for_function("document.querySelector('#stop').disabled", timeout=60_000)
    return page.locator(".assistant").nth(replies).text_content() or ""


def test_a_user_chats_through_the_page(page: Page) -> None:
    page.goto(f"{settings.api.url}/#token={issue_token(f'browser-{new_id()}')}")

    first = send(page, "hello from a real browser", model="scripted")
    second = send(page, "What is the capital of France?", model="smollm2")

    assert first == "You said: hello from a real browser"
    assert "Paris" in second
    assert page.locator(".notice").count() == 0, page.locator(".notice").all_text_contents()
