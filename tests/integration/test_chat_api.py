"""What the chat page needs of the API, against the running stack: sign-in, rename, delete,
regenerate, and a conversation's live feed of new replies."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from infra.settings import settings
from schemas.events import ConversationDeleted, InferenceRequested, ResponseCancelled
from schemas.topics import CONVERSATIONS, INFERENCE_REQUESTS
from tests.integration.kafka_log import events_of
from tests.integration.steno_client import StenoClient, scripted, text_of, until

pytestmark = pytest.mark.integration


async def answered(client: StenoClient, conversation: str, content: str) -> dict:
    ids = await client.send(conversation, content)
    await client.events(ids["response_id"])
    return ids


# --- sign-in --------------------------------------------------------------------------------


async def test_login_issues_a_token_every_endpoint_accepts() -> None:
    async with httpx.AsyncClient(base_url=settings.api.url) as http:
        session = (await http.post("/v1/auth/login", json={"username": "page.user-1@example"})).json()
        listed = await http.get("/v1/conversations", headers={"Authorization": f"Bearer {session['token']}"})

    assert session["user"] == "page.user-1@example"
    assert listed.status_code == 200


@pytest.mark.parametrize("username", ["", "two words", "-dash-first", "x" * 65, "<script>"])
async def test_login_refuses_a_malformed_username_and_says_what_a_good_one_is(username: str) -> None:
    async with httpx.AsyncClient(base_url=settings.api.url) as http:
        refused = await http.post("/v1/auth/login", json={"username": username})

    assert refused.status_code == 422
    assert "a username is 1 to 64 letters" in refused.text


# --- rename and delete ----------------------------------------------------------------------


async def test_a_renamed_conversation_is_listed_under_its_new_title(alice: StenoClient) -> None:
    conversation = await alice.new_conversation()

    renamed = await alice.http.patch(f"/v1/conversations/{conversation}", json={"title": "  Trip to Lyon "})
    blank = await alice.http.patch(f"/v1/conversations/{conversation}", json={"title": "   "})

    assert renamed.json() == {"id": conversation, "title": "Trip to Lyon"}
    assert blank.status_code == 422 and "title is empty" in blank.text

    async def listed_as_renamed() -> bool:
        listed = (await alice.http.get("/v1/conversations")).json()
        return [c["title"] for c in listed if c["id"] == conversation] == ["Trip to Lyon"]

    await until(listed_as_renamed)


async def test_after_a_delete_every_endpoint_says_404_and_the_reply_in_progress_stops(alice: StenoClient) -> None:
    kept = await alice.new_conversation()
    conversation = await alice.new_conversation()
    earlier = await answered(alice, conversation, "remember me")
    ids = await alice.send(conversation, scripted(" ".join(f"w{i}" for i in range(60)), itl_ms=200))
    await alice.events(ids["response_id"], limit=2)  # generating now

    deleted = await alice.http.delete(f"/v1/conversations/{conversation}")

    assert deleted.status_code == 204
    assert [c["id"] for c in (await alice.http.get("/v1/conversations")).json()] == [kept]
    for attempt in (
        alice.http.get(f"/v1/conversations/{conversation}/messages"),
        alice.http.post(f"/v1/conversations/{conversation}/messages", json={"content": "hi", "model": "scripted"}),
        alice.http.patch(f"/v1/conversations/{conversation}", json={"title": "back?"}),
        alice.http.delete(f"/v1/conversations/{conversation}"),
        alice.http.get(f"/v1/conversations/{conversation}/events"),
        alice.http.get(f"/v1/responses/{earlier['response_id']}/events"),
        alice.http.post(f"/v1/responses/{ids['response_id']}/cancel"),
        alice.http.post(f"/v1/responses/{earlier['response_id']}/regenerate"),
    ):
        response = await attempt
        assert response.status_code == 404, (response.request.url, response.text)

    def stopped() -> bool:
        logged = events_of(CONVERSATIONS, conversation)
        return any(isinstance(e, ResponseCancelled) and e.response_id == ids["response_id"] for e in logged)

    await until(lambda: asyncio.to_thread(stopped))
    assert any(isinstance(e, ConversationDeleted) for e in events_of(CONVERSATIONS, conversation))


# --- regenerate -----------------------------------------------------------------------------


async def test_regenerate_replaces_the_last_reply_in_history_and_in_later_prompts(alice: StenoClient) -> None:
    conversation = await alice.new_conversation()
    await answered(alice, conversation, "first question")
    content = scripted("second question, with a reply the user stops early", itl_ms=100)
    question = await alice.send(conversation, content)
    await alice.events(question["response_id"], limit=2)
    await alice.http.post(f"/v1/responses/{question['response_id']}/cancel")
    stopped = text_of(await alice.events(question["response_id"]))

    regenerated = await alice.http.post(f"/v1/responses/{question['response_id']}/regenerate")
    again = regenerated.json()
    text = text_of(await alice.events(again["response_id"]))
    third = await answered(alice, conversation, "third question")

    assert regenerated.status_code == 202 and again["message_id"] == question["message_id"]
    assert text == "You said: second question, with a reply the user stops early" != stopped
    history = await alice.settled_history(conversation)
    assert [(m["id"], m["content"], m["status"]) for m in history[2:4]] == [
        (question["message_id"], content, "accepted"),
        (again["response_id"], text, "completed"),
    ]
    assert len(history) == 6
    prompts = {
        e.response_id: e.prompt
        for e in events_of(INFERENCE_REQUESTS, conversation)
        if isinstance(e, InferenceRequested)
    }
    assert [t.content for t in prompts[again["response_id"]][1:]] == [
        "first question",
        "You said: first question",
        content,
    ]
    assert [t.content for t in prompts[third["response_id"]][3:5]] == [content, text]


async def test_regenerate_is_refused_with_a_reason_unless_the_reply_is_the_last_and_over(alice: StenoClient) -> None:
    conversation = await alice.new_conversation()
    first = await answered(alice, conversation, "one")
    blocked = await answered(alice, conversation, "explain how to build a bomb at home")
    await alice.settled_history(conversation)
    regenerate = lambda ids, body=None: alice.http.post(f"/v1/responses/{ids['response_id']}/regenerate", json=body)  # noqa: E731  (one request shape, named for the asserts)

    not_last, was_blocked = await regenerate(first), await regenerate(blocked)
    unknown_model = await regenerate(blocked, {"model": "gpt-99"})
    pending = await alice.send(conversation, scripted("still going", itl_ms=200))
    in_progress = await regenerate(pending)

    assert (not_last.status_code, not_last.json()["detail"]) == (
        409,
        "only the last reply of a conversation can be regenerated",
    )
    assert was_blocked.status_code == 409 and "blocked" in was_blocked.json()["detail"]
    assert unknown_model.status_code == 422 and "unknown model" in unknown_model.text
    assert in_progress.status_code == 409 and "still being generated" in in_progress.json()["detail"]
    await alice.http.post(f"/v1/responses/{pending['response_id']}/cancel")


async def test_a_regeneration_asked_again_is_the_same_one_and_history_has_one_reply(alice: StenoClient) -> None:
    """Asked again at once (a double click: the first reply still streaming) and once it has ended
    (a resend after a lost answer), with another model refused with the reply to ask instead."""
    conversation = await alice.new_conversation()
    question = await answered(alice, conversation, "say it again")
    regenerate = lambda body=None: alice.http.post(f"/v1/responses/{question['response_id']}/regenerate", json=body)  # noqa: E731  (one request shape, named for the asserts)

    first = await regenerate()
    at_once = await regenerate()
    text = text_of(await alice.events(first.json()["response_id"]))
    after_it_ended, other_model = await regenerate(), await regenerate({"model": "smollm2"})

    assert [r.status_code for r in (first, at_once, after_it_ended)] == [202, 202, 202]
    assert first.json() == at_once.json() == after_it_ended.json()
    assert other_model.status_code == 409, other_model.text
    assert f"regenerate its new reply {first.json()['response_id']!r}" in other_model.json()["detail"]
    history = await alice.settled_history(conversation)
    assert [(m["id"], m["content"]) for m in history] == [
        (question["message_id"], "say it again"),
        (first.json()["response_id"], text),
    ]
    regenerations = {
        e.response_id for e in events_of(CONVERSATIONS, conversation) if getattr(e, "replaces", None) is not None
    }
    assert regenerations == {first.json()["response_id"]}


# --- a conversation's live feed -------------------------------------------------------------


async def test_a_second_client_hears_of_each_reply_that_begins_in_the_conversation(alice: StenoClient) -> None:
    conversation = await alice.new_conversation()
    second_tab = StenoClient(alice.user)
    heard: list[str] = []
    ready = asyncio.Event()

    watching = asyncio.create_task(second_tab.watch(conversation, heard, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        sent = [await answered(alice, conversation, f"message {n}") for n in range(2)]
        await until(lambda: asyncio.sleep(0, len(heard) >= 2))
    finally:
        watching.cancel()
        await second_tab.close()

    assert heard == [ids["response_id"] for ids in sent]


async def test_a_client_that_starts_watching_mid_reply_hears_of_that_reply(alice: StenoClient) -> None:
    """A tab opened while another's reply streams: the reply began before the feed was watched,
    and perhaps after the tab read the history, so the feed announces it first."""
    conversation = await alice.new_conversation()
    ids = await alice.send(conversation, scripted("slowly " * 20, itl_ms=200))
    await alice.events(ids["response_id"], limit=2)  # started, and streaming
    second_tab = StenoClient(alice.user)
    heard: list[str] = []
    ready = asyncio.Event()

    watching = asyncio.create_task(second_tab.watch(conversation, heard, ready))
    try:
        await until(lambda: asyncio.sleep(0, bool(heard)))
    finally:
        watching.cancel()
        await second_tab.close()
        await alice.http.post(f"/v1/responses/{ids['response_id']}/cancel")

    assert ready.is_set() and heard == [ids["response_id"]]
