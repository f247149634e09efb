"""The README's picture of the chat page: `python -m tests.browser.screenshot [PATH]`.

Chats through the page in headless Chromium against the running stack, as the local user `ada`
(whose earlier conversations are deleted first, so every run draws the same page), with the real
model, and saves the page once its last reply has ended (default: docs/chat-page.png).
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
from playwright.sync_api import expect

from infra.settings import REPO_ROOT, settings
from ingest_api.auth import issue_token
from tests.browser.chat_page import new_chat, reply_ended, send, sign_in
from tests.browser.chromium import VIEWPORT, chromium

USER = "ada"
DEFAULT_PATH = REPO_ROOT / "docs" / "chat-page.png"


def forget_earlier_conversations() -> None:
    with httpx.Client(base_url=settings.api.url, headers={"Authorization": f"Bearer {issue_token(USER)}"}) as api:
        for conversation in api.get("/v1/conversations").raise_for_status().json():
            api.delete(f"/v1/conversations/{conversation['id']}").raise_for_status()


def main(path: Path = DEFAULT_PATH) -> None:
    forget_earlier_conversations()
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        sign_in(page, USER)
        send(page, "Plan a weekend in Lyon", model="scripted")
        reply_ended(page)
        new_chat(page)
        for question in ("What is the capital of France?", "Write a Python function that reads a text file."):
            send(page, question, model="smollm2")
            reply_ended(page)
        expect(page.locator("#conversations li")).to_have_count(2)  # the sidebar's listing may come last
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=path)
    print(f"saved {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PATH)
