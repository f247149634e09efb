"""Cross-instance correctness: two API instances (and the balancer in front of them) serve one
user as one API. Each test is run with the two sides on different instances (`direct`: api-1 and
api-2) and with both sides on the balancer (`balanced`: whichever instance it picks)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from httpx_sse import aconnect_sse

from infra.settings import settings
from tests.cluster.conftest import api_urls, on, timeout
from tests.integration.steno_client import StenoClient, scripted, scripted_reply, text_of, until

pytestmark = [pytest.mark.cluster, pytest.mark.integration, timeout(120)]

WORDS = " ".join(f"w{i}" for i in range(40))
SLOW = scripted(WORDS, itl_ms=100)  # ~4 s of streaming; the reply echoes WORDS


@pytest.fixture(params=["direct", "balanced"])
async def pair(request: pytest.FixtureRequest, alice: StenoClient) -> AsyncIterator[tuple[StenoClient, StenoClient]]:
    """The same user on two sides: api-1 and api-2, or the balancer twice."""
    first, second = api_urls() if request.param == "direct" else (settings.api.url, settings.api.url)
    a, b = on(alice, first), on(alice, second)
    yield a, b
    await asyncio.gather(a.close(), b.close())


async def test_a_message_posted_through_one_instance_streams_from_the_other(
    pair: tuple[StenoClient, StenoClient],
) -> None:
    a, b = pair
    conversation = await a.new_conversation()
    ids = await a.send(conversation, "hello from one instance")

    events = await b.events(ids["response_id"])

    assert events[-1].data["outcome"] == "completed"
    assert text_of(events) == scripted_reply("hello from one instance")
    assert [m["content"] for m in await b.settled_history(conversation)] == [
        "hello from one instance",
        scripted_reply("hello from one instance"),
    ]


async def test_cancel_regenerate_and_delete_are_accepted_by_either_instance(
    pair: tuple[StenoClient, StenoClient],
) -> None:
    a, b = pair
    conversation = await a.new_conversation()
    ids = await a.send(conversation, SLOW)
    await a.events(ids["response_id"], limit=2)  # generating now

    cancelled = await b.http.post(f"/v1/responses/{ids['response_id']}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    ended = (await a.events(ids["response_id"]))[-1]
    assert (ended.event, ended.data["outcome"]) == ("done", "cancelled")
    await a.settled_history(conversation)

    regenerated = await b.http.post(f"/v1/responses/{ids['response_id']}/regenerate")
    assert regenerated.status_code == 202, regenerated.text
    again = await a.events(regenerated.json()["response_id"])
    assert again[-1].data["outcome"] == "completed" and text_of(again) == scripted_reply(WORDS)
    await b.settled_history(conversation)

    assert (await a.http.delete(f"/v1/conversations/{conversation}")).status_code == 204
    assert (await b.http.get(f"/v1/conversations/{conversation}/messages")).status_code == 404


async def test_a_second_tab_on_the_other_instance_follows_live(pair: tuple[StenoClient, StenoClient]) -> None:
    a, b = pair
    conversation = await a.new_conversation()
    heard: list[str] = []
    ready = asyncio.Event()

    watching = asyncio.create_task(b.watch(conversation, heard, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        sent = []
        for n in range(2):
            sent.append(await a.send(conversation, f"message {n}"))
            live = await b.events(sent[-1]["response_id"])  # the other tab streams the reply too
            assert text_of(live) == scripted_reply(f"message {n}")
        await until(lambda: asyncio.sleep(0, len(heard) >= 2))
    finally:
        watching.cancel()
    assert heard == [ids["response_id"] for ids in sent]


async def test_a_deletion_is_honoured_by_every_instance_at_once(alice: StenoClient) -> None:
    instances = [on(alice, url) for url in api_urls()]
    try:
        conversation = await alice.new_conversation()
        await alice.send(conversation, "remember me")
        for instance in instances:  # every instance has seen the conversation and remembers its owner
            assert (await instance.http.get(f"/v1/conversations/{conversation}/messages")).status_code == 200

        assert (await alice.http.delete(f"/v1/conversations/{conversation}")).status_code == 204
        began = time.monotonic()
        refused = await asyncio.gather(*(i.http.get(f"/v1/conversations/{conversation}/messages") for i in instances))
        elapsed = time.monotonic() - began

        assert [r.status_code for r in refused] == [404] * len(instances)
        assert elapsed < 1.0
        for instance in instances:
            sent = await instance.http.post(
                f"/v1/conversations/{conversation}/messages", json={"content": "still there?", "model": "scripted"}
            )
            assert sent.status_code == 404
    finally:
        await asyncio.gather(*(i.close() for i in instances))


async def test_one_reply_at_a_time_per_conversation_across_instances(pair: tuple[StenoClient, StenoClient]) -> None:
    a, b = pair
    conversation = await a.new_conversation()
    first = await a.send(conversation, SLOW)
    await a.events(first["response_id"], limit=2)

    second = await b.http.post(
        f"/v1/conversations/{conversation}/messages", json={"content": "me too", "model": "scripted"}
    )
    assert second.status_code == 409, second.text

    assert (await b.events(first["response_id"]))[-1].data["outcome"] == "completed"
    await a.settled_history(conversation)
    after = await b.send(conversation, "now me")
    assert text_of(await a.events(after["response_id"])) == scripted_reply("now me")


async def test_a_background_response_resumes_on_whichever_instance_answers(
    pair: tuple[StenoClient, StenoClient],
) -> None:
    a, b = pair
    body = {"model": "scripted", "input": SLOW, "background": True, "stream": True}
    seen = await _responses_events(a.http, "POST", "/v1/responses", json=body, limit=8)
    response_id, last = seen[0]["response"]["id"], seen[-1]["sequence_number"]

    rest = await _responses_events(b.http, "GET", f"/v1/responses/{response_id}?stream=true&starting_after={last}")

    numbers = [e["sequence_number"] for e in seen + rest]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # no gap, no repeat
    assert rest[-1]["type"] == "response.completed"
    deltas = "".join(e.get("delta", "") for e in seen + rest if e["type"] == "response.output_text.delta")
    assert deltas == rest[-1]["response"]["output"][0]["content"][0]["text"] == scripted_reply(WORDS)


async def test_the_balancer_spreads_open_streams_over_the_instances(alice: StenoClient) -> None:
    """leastconn: an open SSE stream counts, so concurrent streams split over both instances
    (HAProxy names the instance in X-Steno-Instance)."""
    conversations = [await alice.new_conversation() for _ in range(4)]
    sent = [await alice.send(c, SLOW) for c in conversations]
    served: list[str] = []

    async def stream(ids: dict) -> None:
        async with aconnect_sse(alice.http, "GET", f"/v1/responses/{ids['response_id']}/events") as source:
            served.append(source.response.headers["x-steno-instance"])
            async for _ in source.aiter_sse():
                pass

    await asyncio.gather(*(stream(ids) for ids in sent))

    assert sorted(set(served)) == ["api-1", "api-2"]


async def _responses_events(
    http: httpx.AsyncClient, method: str, url: str, limit: int | None = None, **kwargs
) -> list[dict]:
    """A Responses API stream's events, until it ends or until `limit` (then disconnect)."""
    found: list[dict] = []
    async with aconnect_sse(http, method, url, **kwargs) as source:
        assert source.response.status_code == 200, await source.response.aread()
        async for sse in source.aiter_sse():
            found.append(json.loads(sse.data))
            if limit is not None and len(found) >= limit:
                break
    return found
