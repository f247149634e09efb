"""The chat page in a real browser (Debian's Chromium, headless) against the running stack.

Each test signs in as a user of its own and waits on what the page shows (see `chat_page`),
never on time. A reply that a test must act on mid-stream is a `scripted` one that the message
slows down (see `scripted()`), so it cannot be over before the test acts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import APIResponse, Browser, Page, Request, Route, expect

from infra.settings import settings
from ingest_api.auth import issue_token
from tests.browser.chat_page import (
    LAST_REPLY,
    conversation_id,
    new_chat,
    reply_ended,
    send,
    sign_in,
    streaming_with_text,
)
from tests.browser.chromium import VIEWPORT, chromium
from tests.integration.steno_client import scripted

pytestmark = pytest.mark.integration

SLOW_MS = 150  # per word: a 30-word reply streams for about 4.5 s
LONG = " ".join(f"word{i}" for i in range(30))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], errors


def test_signing_in_with_a_username_and_the_reason_a_bad_one_is_refused(page: Page) -> None:
    page.goto(f"{settings.api.url}/")
    page.fill("#username", "two words")
    page.click("#signin-form button")
    expect(page.locator("#signin-error")).to_contain_text("a username is 1 to 64 letters")

    username = sign_in(page)

    expect(page.locator("#who")).to_have_text(username)
    page.reload()  # the session outlives a reload
    page.wait_for_selector("#app:not([hidden])")
    page.click("#sign-out")
    page.wait_for_selector("#signin:not([hidden])")


def test_a_reply_streams_token_by_token_with_its_markdown_rendered(page: Page) -> None:
    sign_in(page)
    calls: list[str] = []
    page.on(
        "request", lambda request: calls.append(f"{request.method} {re.sub(r'/[0-9a-f-]{36}', '/ID', request.url)}")
    )

    send(page, scripted(f"**bold** and `code` {LONG}", itl_ms=SLOW_MS))
    partial = streaming_with_text(page)
    final = reply_ended(page)

    # one request for the message and its reply: the reply streams in the answer to the POST
    assert calls.count(f"POST {settings.api.url}/v1/conversations/ID/messages") == 1
    assert [c for c in calls if "/v1/responses/" in c] == []
    assert final.startswith(partial.rstrip())
    assert final == f"You said: bold and code {LONG}"
    expect(page.locator(f"{LAST_REPLY} strong")).to_have_text("bold")
    expect(page.locator(f"{LAST_REPLY} code")).to_have_text("code")
    assert page.locator(".notice").count() == 0


def test_a_conversation_carries_on_with_the_real_model(page: Page) -> None:
    sign_in(page)

    send(page, "hello from a real browser")
    first = reply_ended(page)
    send(page, "What is the capital of France?", model="smollm2")
    second = reply_ended(page)

    assert first == "You said: hello from a real browser"
    assert "Paris" in second
    # The sidebar lists the new conversation once its listing has come back: wait for it.
    expect(page.locator("#conversations .open")).to_have_text(["hello from a real browser"])


def test_a_listing_that_comes_back_late_does_not_hide_a_newer_conversation(page: Page) -> None:
    """The page's first listing (empty), answered only after the listing that shows the new
    conversation, as on a cold stack: the sidebar keeps the newer answer.

    The first listing is answered as a new user's is, empty, rather than fetched when it is
    asked: Playwright runs this handler only while the test waits on the page, so a fetch could
    go out after the conversation was started (and list it), and a second listing, asked while
    that fetch was in flight, found nothing held yet and was held too (CI saw the sidebar empty)."""
    held: list[Route] = []

    def hold_the_first_listing(route: Route) -> None:
        if route.request.method == "GET" and not held:
            held.append(route)  # answered at the end, as it was when asked: no conversation yet
            return
        route.continue_()

    page.route("**/v1/conversations", hold_the_first_listing)
    sign_in(page)
    send(page, "hello from a slow listing")
    reply_ended(page)
    expect(page.locator("#conversations .open")).to_have_text(["hello from a slow listing"])

    held[0].fulfill(status=200, content_type="application/json", body="[]")
    page.wait_for_url(re.compile(r".*#/c/[\w-]+$"))  # the page went on once the late listing arrived

    expect(page.locator("#conversations .open")).to_have_text(["hello from a slow listing"])


def test_stop_ends_the_reply_where_it_was(page: Page) -> None:
    sign_in(page)
    send(page, scripted(LONG, itl_ms=SLOW_MS))
    streaming_with_text(page)
    assert page.is_visible("#stop")

    page.click("#stop")
    stopped = reply_ended(page, "cancelled")

    assert stopped and len(stopped) < len(f"You said: {LONG}")
    assert f"You said: {LONG}".startswith(stopped.split("\n")[0])
    expect(page.locator(f"{LAST_REPLY} .note")).to_have_text("Stopped.")
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator(f"{LAST_REPLY} button.regenerate")).to_be_visible()


def test_reloading_mid_reply_continues_the_same_reply_without_repeating_it(page: Page) -> None:
    sign_in(page)
    send(page, scripted(LONG, itl_ms=SLOW_MS))
    before = streaming_with_text(page)
    response_id = page.get_attribute(LAST_REPLY, "data-id")
    resumed: list[str] = []

    def note_resumption(request: Request) -> None:
        if "/events?starting_after=" in request.url:
            resumed.append(request.url)

    page.on("request", note_resumption)

    page.reload()
    after = reply_ended(page)

    assert after == f"You said: {LONG}" and after.startswith(before.rstrip())
    assert page.get_attribute(LAST_REPLY, "data-id") == response_id  # the same reply, not a new one
    expect(page.locator("#log .assistant")).to_have_count(1)
    assert resumed and response_id is not None and all(response_id in url for url in resumed)


def test_markup_in_a_reply_stays_inert_text(page: Page) -> None:
    payload = (
        "<script>window.pwned = 'script'</script> <img src=x onerror=\"window.pwned = 'onerror'\"> "
        "[click](javascript:window.pwned='link') <svg onload=\"window.pwned = 'svg'\"></svg>"
    )
    sign_in(page)

    send(page, scripted("show it", script=payload))
    shown = reply_ended(page)

    assert page.evaluate("window.pwned") is None
    assert page.locator("#log script, #log img, #log svg, #log [onerror], #log [onload]").count() == 0
    assert page.locator("#log a[href^='javascript']").count() == 0
    assert "<script>window.pwned = 'script'</script>" in shown and "onerror=" in shown


def test_a_second_tab_on_the_conversation_shows_the_reply_live(page: Page) -> None:
    sign_in(page)
    send(page, "first message")
    reply_ended(page)
    second = page.context.new_page()  # same browser profile: same session
    second.goto(f"{settings.api.url}/#/c/{conversation_id(page)}")
    second.wait_for_selector(f"{LAST_REPLY}[data-state=completed]")

    send(page, scripted(LONG, itl_ms=SLOW_MS))
    live = streaming_with_text(second)
    shown = reply_ended(second)

    assert shown == reply_ended(page) == f"You said: {LONG}" and shown.startswith(live.rstrip())
    expect(second.locator("#log .user").last).to_have_text(scripted(LONG, itl_ms=SLOW_MS))
    second.close()


def test_a_second_tab_shows_a_reply_announced_before_its_history_has_it(page: Page) -> None:
    """The feed announces a reply from the token stream, and the history has it once the
    projection applied its message: under load the announcement can come first. The second tab's
    reading of the history that the announcement sets off gets the history from before the
    message (as a lagging projection gives it): the tab must read again, not lose the reply."""
    sign_in(page)
    send(page, "first message")
    reply_ended(page)
    readings: list[str] = []  # the second tab's readings of the history, as answered

    def the_second_reading_from_before(route: Route) -> None:
        if len(readings) == 1:
            readings.append(readings[0])
            route.fulfill(status=200, content_type="application/json", body=readings[0])
            return
        response = route.fetch()
        readings.append(response.text())
        route.fulfill(response=response)

    second = page.context.new_page()
    second.route("**/v1/conversations/*/messages", the_second_reading_from_before)
    second.goto(f"{settings.api.url}/#/c/{conversation_id(page)}")
    second.wait_for_selector(f"{LAST_REPLY}[data-state=completed]")

    send(page, scripted(LONG, itl_ms=SLOW_MS))
    streaming_with_text(second)

    assert reply_ended(second) == f"You said: {LONG}"
    assert len(readings) >= 3 and readings[1] == readings[0]  # the stale one was served, then a fresh one
    second.close()


def test_regenerate_replaces_the_last_reply(page: Page) -> None:
    sign_in(page)
    send(page, "say it again")
    first = reply_ended(page)
    old_id = page.get_attribute(LAST_REPLY, "data-id")

    page.click(f"{LAST_REPLY} button.regenerate")
    page.wait_for_selector(f"{LAST_REPLY}:not([data-id='{old_id}'])")
    again = reply_ended(page)

    assert again == first == "You said: say it again"
    expect(page.locator("#log .assistant")).to_have_count(1)
    history = api_get(page, f"/v1/conversations/{conversation_id(page)}/messages").json()
    assert [m["role"] for m in history] == ["user", "assistant"] and history[1]["id"] != old_id


def test_a_regenerated_reply_announced_before_its_request_returns_is_shown_once(page: Page) -> None:
    """The conversation's feed announces the new reply as it begins; here the regenerate request's
    answer reaches the page only once the reply has ended (a slow network, a busy browser), long
    after the announcement: the page shows the new reply once, in the old one's place."""
    held: list[tuple[Route, APIResponse]] = []
    page.route("**/regenerate", lambda route: held.append((route, route.fetch())))  # sent now, answered later
    sign_in(page)
    send(page, scripted("say it again", itl_ms=SLOW_MS))
    reply_ended(page)
    page.click(f"{LAST_REPLY} button.regenerate")
    while not held:
        page.wait_for_timeout(20)  # lets Playwright run the route handler: the request is sent
    route, answer = held[0]
    new_id = answer.json()["response_id"]
    while not any(m["id"] == new_id and m["status"] == "completed" for m in history_of(page)):
        page.wait_for_timeout(50)

    route.fulfill(response=answer)
    page.wait_for_selector(f"{LAST_REPLY}[data-id='{new_id}']")
    reply_ended(page)

    expect(page.locator("#log .assistant")).to_have_count(1)


def test_sending_again_after_lost_answers_sends_the_same_chat_and_message(page: Page) -> None:
    """steno takes a request but its answer never reaches the page (a dropped connection, or a 503
    whose write landed after all): first a new chat's creation, then its message. The page keeps
    the draft's idempotency key, so each send again gets what steno has: one chat, one message."""
    sign_in(page)
    keys: dict[str, list[str | None]] = {"chat": [], "message": []}

    def lose_the_first_answer(kind: str) -> Callable[[Route], None]:
        def handle(route: Route) -> None:
            if route.request.method != "POST":
                route.continue_()
                return
            keys[kind].append(route.request.header_value("idempotency-key"))
            if len(keys[kind]) == 1:
                route.fetch()  # steno takes it (a message's reply streams to its end); the page never hears
                route.abort("connectionreset")
            else:
                route.continue_()

        return handle

    page.route("**/v1/conversations", lose_the_first_answer("chat"))
    page.route("**/v1/conversations/*/messages", lose_the_first_answer("message"))
    page.select_option("#model", "scripted")
    page.fill("#content", "only once, please")
    page.press("#content", "Enter")  # the chat's creation: its answer is lost
    expect(page.locator("#notice")).to_be_visible()
    page.press("#content", "Enter")  # the chat again, then its message: that answer is lost
    expect(page.locator("#notice")).to_be_visible()
    page.press("#content", "Enter")  # the message again

    expect(page.locator("#log .assistant")).to_have_count(1)
    reply_ended(page)
    assert [len(keys["chat"]), len(keys["message"])] == [2, 2], keys
    assert len({*keys["chat"], *keys["message"]} - {None}) == 1, keys  # one key, the draft's
    while len(turns := history_of(page)) < 2 or any(m["status"] == "pending" for m in turns):  # the projection lags
        page.wait_for_timeout(50)
    assert [(t["role"], t["content"]) for t in turns] == [
        ("user", "only once, please"),
        ("assistant", "You said: only once, please"),
    ]
    assert [c["title"] for c in api_get(page, "/v1/conversations").json()] == ["only once, please"]
    expect(page.locator("#log .user")).to_have_count(1)


def test_blocked_messages_and_failed_replies_get_a_clear_notice(page: Page) -> None:
    sign_in(page)

    send(page, "explain how to build a bomb at home")
    reply_ended(page, "blocked")
    expect(page.locator(f"{LAST_REPLY} .notice")).to_have_text(re.compile(r"^Blocked by moderation:"))
    send(page, scripted("this one breaks", fail_after=1))
    reply_ended(page, "failed")
    expect(page.locator(f"{LAST_REPLY} .notice")).to_have_text(re.compile(r"^The reply failed:.*scripted failure"))


def test_the_sidebar_lists_renames_and_deletes_conversations(page: Page) -> None:
    sign_in(page)
    send(page, "the older conversation")
    reply_ended(page)
    older = conversation_id(page)
    new_chat(page)
    send(page, "the newer conversation")
    reply_ended(page)
    newer = conversation_id(page)
    expect(page.locator("#conversations .open")).to_have_text(["the newer conversation", "the older conversation"])

    page.click(f"#conversations li[data-id='{newer}'] button.rename")
    page.fill(".title-input", "Renamed in the page")
    page.press(".title-input", "Enter")
    expect(page.locator("#title")).to_have_text("Renamed in the page")
    page.hover(f"#conversations li[data-id='{older}']")  # its buttons show on hover
    page.click(f"#conversations li[data-id='{older}'] button.delete")
    page.click(f"#conversations li[data-id='{older}'] button.delete.confirming")
    expect(page.locator("#conversations li")).to_have_count(1)

    listed = api_get(page, "/v1/conversations").json()
    assert [(c["id"], c["title"]) for c in listed] == [(newer, "Renamed in the page")]
    assert api_get(page, f"/v1/conversations/{older}/messages").status_code == 404
    page.goto(f"{settings.api.url}/#/c/{older}")  # a deleted conversation's address
    page.wait_for_url("**/#/new")
    expect(page.locator("#notice")).to_contain_text("no conversation")


def history_of(page: Page) -> list[dict]:
    """The open conversation's messages, as the API has them."""
    response = api_get(page, f"/v1/conversations/{conversation_id(page)}/messages")
    response.raise_for_status()
    return list(response.json())


def api_get(page: Page, path: str) -> httpx.Response:
    """GET from the API as the page's signed-in user, to check what the page did."""
    token = issue_token(page.inner_text("#who"))
    return httpx.get(f"{settings.api.url}{path}", headers={"Authorization": f"Bearer {token}"})


def test_every_asset_comes_from_steno_under_a_policy_that_forbids_inline_and_foreign_scripts() -> None:
    page = httpx.get(f"{settings.api.url}/")
    policy = page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    imported = re.findall(r'from "([^"]+)"', httpx.get(f"{settings.api.url}/static/js/markdown.js").text)

    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy
    assert all(a.startswith(("/static/", "data:")) for a in assets), assets
    assert imported == ["../vendor/markdown-it/markdown-it.esm.min.mjs"]
    for asset in [a for a in assets if a.startswith("/static/")] + [
        "/static/vendor/markdown-it/markdown-it.esm.min.mjs"
    ]:
        served = httpx.get(f"{settings.api.url}{asset}")
        assert served.status_code == 200, asset
        assert served.headers["content-type"].split(";")[0] in ("text/javascript", "text/css"), asset
