"""The whole chat pipeline on the real stack: API → Kafka → Faust → bridge → Triton → SSE, with
the Cassandra and Redis views. Needs `make up` (the test command brings it up)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from infra.settings import settings
from projections import active_context
from projections.active_context import ActiveContext
from schemas.events import InferenceRequested
from schemas.topics import CONVERSATIONS, INFERENCE_REQUESTS, TOKENS
from tests.integration.kafka_log import events_of
from tests.integration.steno_client import StenoClient, scripted_reply, text_of, until

pytestmark = pytest.mark.integration

SCRIPTED_WINDOW = settings.models["scripted"]


async def test_a_message_streams_its_reply_and_lands_in_every_view(alice: StenoClient) -> None:
    conversation = await alice.new_conversation()
    content = "hello steno, please stream this back"
    ids = await alice.send(conversation, content)

    events = await alice.events(ids["response_id"])

    assert text_of(events) == scripted_reply(content)
    assert [e.event for e in events][-1] == "done"
    assert [e.data["seq"] for e in events if e.event == "token"] == list(range(len(events) - 1))
    history = await alice.settled_history(conversation)
    assert [(m["role"], m["status"]) for m in history] == [("user", "accepted"), ("assistant", "completed")]
    assert history[1]["content"] == scripted_reply(content)
    client = active_context.connect()
    cache = ActiveContext(client, settings.context)
    await until(lambda: _cached_turns(cache, conversation, 2))  # applied right after history
    turns = await cache.turns(conversation)
    await client.aclose()
    assert [(t.role, t.content) for t in turns or []] == [("user", content), ("assistant", scripted_reply(content))]
    logged = {
        type(e).__name__
        for topic in (CONVERSATIONS, INFERENCE_REQUESTS, TOKENS)
        for e in events_of(topic, conversation)
    }
    assert {
        "MessageSubmitted",
        "MessageAccepted",
        "InferenceRequested",
        "TokenGenerated",
        "ResponseCompleted",
    } <= logged


async def test_the_next_prompt_contains_the_previous_exchange(alice: StenoClient) -> None:
    conversation = await alice.new_conversation()
    first = await alice.send(conversation, "my name is Ada")
    await alice.events(first["response_id"])
    second = await alice.send(conversation, "what is my name?")
    await alice.events(second["response_id"])

    [request] = [e for e in events_of(INFERENCE_REQUESTS, conversation) if e.response_id == second["response_id"]]
    assert [(t.role, t.content) for t in request.prompt[1:]] == [
        ("user", "my name is Ada"),
        ("assistant", scripted_reply("my name is Ada")),
        ("user", "what is my name?"),
    ]
    assert request.prompt[0].role == "system"


async def test_a_long_conversation_never_overflows_the_context_window(alice: StenoClient) -> None:
    conversation = await alice.new_conversation()
    long_message = " ".join(f"word{i}" for i in range(90))
    for _ in range(6):
        ids = await alice.send(conversation, long_message)
        await alice.events(ids["response_id"])

    requests = [e for e in events_of(INFERENCE_REQUESTS, conversation) if isinstance(e, InferenceRequested)]
    assert len(requests) == 6
    for request in requests:
        assert request.prompt_tokens + request.max_tokens <= SCRIPTED_WINDOW.context_window
        assert request.prompt[-1].content == long_message
    assert len(requests[-1].prompt) < 2 * 6 + 1, "older turns should have been left out"


async def test_a_conversation_beyond_its_window_keeps_its_prompts_start_for_turns_at_a_time(alice: StenoClient) -> None:
    """So a model's cache of one prompt serves the next (`context_window`'s anchors): the prompt of
    a turn then begins with the whole prompt of the turn before. Keeping all that fits, every
    prompt here would start one exchange later than the one before (checked: 0 of 14 share it, 9 of 14 here)."""
    conversation = await alice.new_conversation()
    for turn in range(24):
        ids = await alice.send(conversation, f"turn {turn}: " + " ".join(f"w{turn}-{i}" for i in range(16)))
        await alice.events(ids["response_id"])

    requests = [e for e in events_of(INFERENCE_REQUESTS, conversation) if isinstance(e, InferenceRequested)]
    beyond = [r.prompt for r in requests if len(r.prompt) < 2 * requests.index(r) + 2]  # older turns left out
    extended = [after[: len(before)] == before for before, after in itertools.pairwise(beyond)]
    assert len(beyond) >= 12 and sum(extended) >= len(extended) / 2, extended
    assert all(r.prompt_tokens + r.max_tokens <= SCRIPTED_WINDOW.context_window for r in requests)


async def test_a_dangerous_message_is_blocked_with_a_reason(alice: StenoClient) -> None:
    conversation = await alice.new_conversation()
    ids = await alice.send(conversation, "explain how to build a bomb at home")

    [ending] = await alice.events(ids["response_id"])

    assert ending.event == "blocked"
    assert "weapons" in ending.data["detail"]
    history = await alice.settled_history(conversation)
    assert [m["status"] for m in history] == ["blocked", "blocked"]


async def test_cancel_mid_stream_keeps_the_partial_reply(alice: StenoClient) -> None:
    conversation = await alice.new_conversation()
    ids = await alice.send(conversation, " ".join(f"w{i}" for i in range(120)))
    stream = asyncio.create_task(alice.events(ids["response_id"]))
    await until(lambda: _has_tokens(alice, ids["response_id"]))

    cancelled = await alice.http.post(f"/v1/responses/{ids['response_id']}/cancel")
    events = await stream

    assert cancelled.status_code == 202
    assert events[-1].event == "done" and events[-1].data["outcome"] == "cancelled"
    partial = text_of(events)
    assert 0 < len(partial) < len(scripted_reply(" ".join(f"w{i}" for i in range(120))))
    reply = (await alice.settled_history(conversation))[1]
    assert (reply["status"], reply["content"]) == ("cancelled", partial)


async def test_resume_with_last_event_id_loses_and_repeats_nothing(alice: StenoClient) -> None:
    conversation = await alice.new_conversation()
    content = " ".join(f"t{i}" for i in range(40))
    ids = await alice.send(conversation, content)

    first_part = await alice.events(ids["response_id"], limit=5)  # disconnects mid-stream
    rest = await alice.events(ids["response_id"], last_event_id=first_part[-1].id)
    assert text_of(first_part + rest) == scripted_reply(content)
    assert rest[-1].event == "done"

    after_done = await alice.events(ids["response_id"], last_event_id=first_part[1].id)
    assert text_of(first_part[:2] + after_done) == scripted_reply(content)
    assert await alice.events(ids["response_id"], last_event_id=rest[-1].id) == []


async def test_a_message_sent_for_an_event_stream_gets_its_reply_in_the_same_response(alice: StenoClient) -> None:
    conversation = await alice.new_conversation()
    content = " ".join(f"s{i}" for i in range(30))

    accepted, *reply = await alice.send_streamed(conversation, content)

    assert accepted.event == "accepted" and accepted.id == ""  # not a log position: resuming starts at the reply
    assert text_of(reply) == scripted_reply(content) and reply[-1].event == "done"
    history = await alice.settled_history(conversation)
    assert [m["status"] for m in history] == ["accepted", "completed"]
    assert history[0]["id"] == history[1]["reply_to"] == accepted.data["message_id"]
    assert reply == await alice.events(accepted.data["response_id"])  # the same events as the GET stream


async def test_a_streamed_send_cut_off_midway_resumes_on_the_response_stream(alice: StenoClient) -> None:
    conversation = await alice.new_conversation()
    content = " ".join(f"r{i}" for i in range(40))

    accepted, *first_part = await alice.send_streamed(conversation, content, limit=6)  # disconnects mid-stream
    rest = await alice.events(accepted.data["response_id"], last_event_id=first_part[-1].id)

    assert text_of(first_part + rest) == scripted_reply(content)
    assert rest[-1].event == "done"
    refused = await alice.http.post(
        f"/v1/conversations/{conversation}/messages",
        json={"content": "hi", "model": "gpt-99"},
        headers={"Accept": "text/event-stream"},
    )
    assert refused.status_code == 422 and "unknown model" in refused.text  # errors stay JSON, before any stream


async def test_two_users_at_once_get_their_own_tokens_and_not_each_others(alice: StenoClient, bob: StenoClient) -> None:
    a_conv, b_conv = await asyncio.gather(alice.new_conversation(), bob.new_conversation())
    a_ids, b_ids = await asyncio.gather(alice.send(a_conv, "alpha " * 20), bob.send(b_conv, "bravo " * 20))
    a_events, b_events = await asyncio.gather(alice.events(a_ids["response_id"]), bob.events(b_ids["response_id"]))

    assert text_of(a_events) == scripted_reply("alpha " * 20)
    assert text_of(b_events) == scripted_reply("bravo " * 20)
    for attempt in (
        bob.http.get(f"/v1/conversations/{a_conv}/messages"),
        bob.http.post(f"/v1/conversations/{a_conv}/messages", json={"content": "hi", "model": "scripted"}),
        bob.http.get(f"/v1/responses/{a_ids['response_id']}/events"),
        bob.http.post(f"/v1/responses/{a_ids['response_id']}/cancel"),
    ):
        assert (await attempt).status_code == 404
    assert a_conv not in [c["id"] for c in (await bob.http.get("/v1/conversations")).json()]
    assert next(c["id"] for c in (await alice.http.get("/v1/conversations")).json()) == a_conv


async def test_bad_requests_get_clear_errors_and_write_nothing(alice: StenoClient) -> None:
    conversation = await alice.new_conversation()
    post = lambda body: alice.http.post(f"/v1/conversations/{conversation}/messages", json=body)  # noqa: E731  (one request shape, named for the asserts)

    assert (await post({"content": "   ", "model": "scripted"})).status_code == 422
    assert (await post({"content": "hi", "model": "gpt-99"})).status_code == 422
    oversized = await post({"content": "x" * (settings.api.max_message_bytes + 1), "model": "scripted"})
    assert oversized.status_code == 413 and "limit" in oversized.json()["detail"]
    assert await alice.history(conversation) == []

    first = await alice.send(conversation, " ".join(["slow"] * 100))
    busy = await post({"content": "and another", "model": "scripted"})
    assert busy.status_code == 409
    await alice.events(first["response_id"])
    assert [m["status"] for m in await alice.settled_history(conversation)] == ["accepted", "completed"]

    anonymous = await alice.http.get("/v1/conversations", headers={"Authorization": ""})
    forged = await alice.http.get("/v1/conversations", headers={"Authorization": "Bearer abc.def.ghi"})
    assert anonymous.status_code == forged.status_code == 401


async def test_the_real_model_answers_through_the_whole_pipeline(alice: StenoClient) -> None:
    conversation = await alice.new_conversation()
    ids = await alice.send(conversation, "What is the capital of France?", model="smollm2")

    events = await alice.events(ids["response_id"])

    assert events[-1].event == "done"
    assert "Paris" in text_of(events)


async def _cached_turns(cache: ActiveContext, conversation_id: str, count: int) -> bool:
    return len(await cache.turns(conversation_id) or []) >= count


async def _has_tokens(client: StenoClient, response_id: str) -> bool:
    return any(e.event == "token" for e in await client.events(response_id, limit=1))
