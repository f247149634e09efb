"""Driving the chat page as a user would, and waiting on what it shows.

Waits are selectors and `expect`, not `wait_for_function`: the page's Content-Security-Policy
forbids the `eval` that Playwright needs to poll a JavaScript expression.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from infra.settings import settings
from schemas.events import new_id

LAST_REPLY = "#log .assistant:last-child"


def sign_in(page: Page, username: str | None = None) -> str:
    """Sign in through the form (as a new user unless named); returns the username."""
    username = username or f"browser-{new_id()}"
    page.goto(f"{settings.api.url}/")
    page.fill("#username", username)
    page.click("#signin-form button")
    page.wait_for_selector("#app:not([hidden])")
    page.wait_for_selector("#model option", state="attached")
    return username


def new_chat(page: Page) -> None:
    page.click("#new-chat")
    page.wait_for_url("**/#/new")
    expect(page.locator("#log > *")).to_have_count(0)


def send(page: Page, text: str, model: str = "scripted") -> None:
    replies = page.locator("#log .assistant")
    count = replies.count()
    page.select_option("#model", model)
    page.fill("#content", text)
    page.press("#content", "Enter")
    expect(replies).to_have_count(count + 1)


def reply_ended(page: Page, state: str = "completed") -> str:
    """Wait until the last reply ends in `state`; returns its text."""
    page.wait_for_selector(f"{LAST_REPLY}[data-state={state}]", timeout=60_000)
    return page.locator(f"{LAST_REPLY} .body").inner_text()


def streaming_with_text(page: Page) -> str:
    """Wait until the last reply has shown some of its text but not all; returns what it shows."""
    page.wait_for_selector(f"{LAST_REPLY}[data-state=streaming] .body:not(:empty)")
    return page.locator(f"{LAST_REPLY} .body").inner_text()


def conversation_id(page: Page) -> str:
    """The open conversation's id, from the page's address (once it has one)."""
    page.wait_for_url(re.compile(r".*#/c/[\w-]+$"))
    return page.url.split("#/c/")[1]
