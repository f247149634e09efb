"""The OpenAI-compatible API, driven by the official `openai` package, unchanged, pointed at the
running steno: every call goes through the real pipeline (moderation, context, bridge, Triton)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from httpx_sse import aconnect_sse
from openai.types.chat import ChatCompletionMessageParam

from infra.settings import settings
from ingest_api.auth import issue_token
from schemas.events import InferenceRequested, new_id
from schemas.topics import INFERENCE_REQUESTS
from tests.integration.kafka_log import events_of
from tests.integration.steno_client import StenoClient, scripted_reply, until
from tests.openai_conformance import Recorder

pytestmark = pytest.mark.integration

LONG = " ".join(f"w{i}" for i in range(100))  # echoed by the scripted model: ~1 s, under its max_tokens


@pytest.fixture
def steno(alice: StenoClient) -> StenoClient:
    """The same user on steno's native API, to see what the OpenAI calls left in history."""
    return alice


@pytest.fixture
async def client(steno: StenoClient) -> AsyncIterator[openai.AsyncOpenAI]:
    """The SDK over a recording transport: whatever it received is checked against OpenAI's schemas."""
    recorder = Recorder()
    http = httpx.AsyncClient(transport=recorder.async_transport(), timeout=60)
    sdk = openai.AsyncOpenAI(
        base_url=f"{settings.api.url}/v1", api_key=issue_token(steno.user), max_retries=0, http_client=http
    )
    yield sdk
    await sdk.close()
    recorder.check()


async def only_conversation(steno: StenoClient) -> str:
    """The one conversation the test's user has, once the projection lists it."""
    conversations: list = []

    async def listed() -> bool:
        nonlocal conversations
        conversations = (await steno.http.get("/v1/conversations")).json()
        return len(conversations) == 1

    await until(listed)
    return conversations[0]["id"]


async def test_models_lists_what_triton_serves(client: openai.AsyncOpenAI) -> None:
    models = [model.id async for model in client.models.list()]

    assert models == ["scripted", "smollm2"]


async def test_a_streamed_chat_completion_is_the_models_text_with_usage(
    client: openai.AsyncOpenAI, steno: StenoClient
) -> None:
    stream = await client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    choice_chunks = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in choice_chunks)
    assert text == scripted_reply("stream me")
    assert len({(c.id, c.created) for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in choice_chunks][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in choice_chunks[:-1])
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    conversation = await only_conversation(steno)
    [request] = [e for e in events_of(INFERENCE_REQUESTS, conversation) if isinstance(e, InferenceRequested)]
    assert usage_chunk.usage.prompt_tokens == request.prompt_tokens
    assert usage_chunk.usage.completion_tokens == len(choice_chunks) - 2  # less the role and finish chunks
    history = await steno.settled_history(conversation)
    assert [(m["role"], m["content"]) for m in history] == [("user", "stream me"), ("assistant", text)]


async def test_the_request_messages_are_the_whole_prompt(client: openai.AsyncOpenAI, steno: StenoClient) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Answer tersely."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "second "}, {"type": "text", "text": "question"}]},
    ]
    completion = await client.chat.completions.create(model="scripted", messages=messages, max_tokens=3)

    assert completion.choices[0].message.content == "You said: second "  # cut at max_tokens (3 word tokens)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    [request] = events_of(INFERENCE_REQUESTS, await only_conversation(steno))
    assert [(t.role, t.content) for t in request.prompt] == [
        ("system", "Answer tersely."),
        ("user", "first question"),
        ("assistant", "first answer"),
        ("user", "second question"),
    ]


async def test_a_blocked_message_ends_with_content_filter(client: openai.AsyncOpenAI) -> None:
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": "explain how to build a bomb at home"}]
    stream = await client.chat.completions.create(model="scripted", messages=question, stream=True)
    chunks = [chunk async for chunk in stream]
    completion = await client.chat.completions.create(model="scripted", messages=question)

    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert completion.choices[0].finish_reason == "content_filter"
    assert completion.choices[0].message.content is None
    assert "weapons" in (completion.choices[0].message.refusal or "")


async def test_bad_requests_get_openai_errors(client: openai.AsyncOpenAI, steno: StenoClient) -> None:
    with pytest.raises(openai.NotFoundError) as unknown_model:
        await client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as not_the_users_turn:
        await client.chat.completions.create(model="scripted", messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as no_messages:
        await client.chat.completions.create(model="scripted", messages=[])
    with pytest.raises(openai.BadRequestError) as tool_role:
        await client.chat.completions.create(
            model="scripted", messages=[{"role": "tool", "content": "42", "tool_call_id": "x"}]
        )
    with pytest.raises(openai.BadRequestError) as unstored_continuation:
        await client.responses.create(model="scripted", input="hi", store=False, previous_response_id="resp_0")
    anonymous = openai.AsyncOpenAI(base_url=f"{settings.api.url}/v1", api_key="not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await anonymous.models.list()

    assert unknown_model.value.code == "model_not_found"
    assert not_the_users_turn.value.param == "messages"
    assert no_messages.value.param == "messages"
    assert tool_role.value.param == "messages.0.role"
    assert unstored_continuation.value.param == "store"
    assert (await steno.http.get("/v1/conversations")).json() == [], "a refused request must write nothing"


async def test_a_streamed_response_has_numbered_responses_events(client: openai.AsyncOpenAI) -> None:
    async with client.responses.stream(model="scripted", input="hello responses") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()

    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events[:4]] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == scripted_reply("hello responses")
    assert final.usage is not None and final.usage.output_tokens > 0


async def test_a_background_response_resumes_exactly_after_an_event(client: openai.AsyncOpenAI) -> None:
    started = await client.responses.create(model="scripted", input=LONG, background=True)
    assert started.status == "in_progress"

    async with client.responses.stream(response_id=started.id, starting_after=6) as resumed:
        after_six = [(e.sequence_number, e.type) async for e in resumed]
    everything = [(e.sequence_number, e.type) async for e in await client.responses.retrieve(started.id, stream=True)]
    on_the_wire = await _raw_stream(client, started.id, starting_after=6)

    assert after_six == everything[7:] == on_the_wire
    assert everything[-1][1] == "response.completed"
    finished = await client.responses.retrieve(started.id)
    assert (finished.status, finished.output_text) == ("completed", scripted_reply(LONG))


async def test_previous_response_id_carries_the_conversation(client: openai.AsyncOpenAI, steno: StenoClient) -> None:
    first = await client.responses.create(model="scripted", input="remember the word kumquat")
    second = await client.responses.create(model="scripted", input="which word?", previous_response_id=first.id)

    assert second.output_text == scripted_reply("which word?")
    conversation = await only_conversation(steno)
    requests = [e for e in events_of(INFERENCE_REQUESTS, conversation) if isinstance(e, InferenceRequested)]
    assert [(t.role, t.content) for t in requests[1].prompt[1:]] == [
        ("user", "remember the word kumquat"),
        ("assistant", first.output_text),
        ("user", "which word?"),
    ]


async def test_cancel_stops_a_background_response(client: openai.AsyncOpenAI, steno: StenoClient) -> None:
    started = await client.responses.create(model="scripted", input=LONG, background=True)
    async with client.responses.stream(response_id=started.id) as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                break

    cancelled = await client.responses.cancel(started.id)

    assert cancelled.status == "cancelled"
    assert 0 < len(cancelled.output_text) < len(scripted_reply(LONG))
    reply = (await steno.settled_history(await only_conversation(steno)))[1]
    assert (reply["status"], reply["content"]) == ("cancelled", cancelled.output_text)


async def test_a_streaming_client_that_leaves_cancels_its_reply(client: openai.AsyncOpenAI, steno: StenoClient) -> None:
    stream = await client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": LONG}], stream=True
    )
    async for chunk in stream:
        if chunk.choices[0].delta.content:
            break
    await stream.close()

    conversation = await only_conversation(steno)
    reply = (await steno.settled_history(conversation, timeout_s=20))[1]
    assert reply["status"] == "cancelled"


async def test_a_responses_stream_whose_client_leaves_cancels_its_reply(
    client: openai.AsyncOpenAI, steno: StenoClient
) -> None:
    stream = await client.responses.create(model="scripted", input=LONG, stream=True)
    async for event in stream:
        if event.type == "response.output_text.delta":
            break
    await stream.close()

    conversation = await only_conversation(steno)
    reply = (await steno.settled_history(conversation, timeout_s=20))[1]
    assert reply["status"] == "cancelled"


async def test_an_unstored_response_answers_then_leaves_history(client: openai.AsyncOpenAI, steno: StenoClient) -> None:
    async with client.responses.stream(model="scripted", input=LONG, store=False) as stream:
        conversation = await only_conversation(steno)  # listed while its reply streams
        answered = await stream.get_final_response()

    async def forgotten() -> bool:
        return (await steno.http.get("/v1/conversations")).json() == []

    await until(forgotten)
    assert answered.output_text == scripted_reply(LONG)
    assert (await steno.http.get(f"/v1/conversations/{conversation}/messages")).status_code == 404
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(answered.id)


async def test_responses_of_other_users_are_not_found(client: openai.AsyncOpenAI) -> None:
    mine = await client.responses.create(model="scripted", input="private")
    other = openai.AsyncOpenAI(base_url=f"{settings.api.url}/v1", api_key=issue_token("someone-else"), max_retries=0)

    with pytest.raises(openai.NotFoundError):
        await other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        await other.responses.create(model="scripted", input="continue", previous_response_id=mine.id)


async def _raw_stream(client: openai.AsyncOpenAI, response_id: str, starting_after: int) -> list[tuple[int, str]]:
    """The resumed stream as sent, with `starting_after` on the wire (the SDK filters client-side)."""
    headers = {"Authorization": f"Bearer {client.api_key}"}
    async with httpx.AsyncClient(base_url=settings.api.url, headers=headers, timeout=30) as http:
        url = f"/v1/responses/{response_id}?stream=true&starting_after={starting_after}"
        async with aconnect_sse(http, "GET", url) as source:
            return [(e.json()["sequence_number"], e.event) async for e in source.aiter_sse()]


async def test_a_response_requested_again_under_its_idempotency_key_is_the_same_response(
    client: openai.AsyncOpenAI, steno: StenoClient
) -> None:
    """What OpenAI's SDK does with `extra_headers` on its own retries after a 503: the same
    conversation, message and reply, in a new conversation and in one continued."""
    once, again = ({"Idempotency-Key": new_id()} for _ in range(2))
    first = await client.responses.create(model="scripted", input="only once", extra_headers=once)
    assert (await client.responses.create(model="scripted", input="only once", extra_headers=once)).id == first.id
    follow = await client.responses.create(
        model="scripted", input="and once more", previous_response_id=first.id, extra_headers=again
    )
    repeated = await client.responses.create(
        model="scripted", input="and once more", previous_response_id=first.id, extra_headers=again
    )

    assert (repeated.id, repeated.output_text) == (follow.id, scripted_reply("and once more"))
    conversation, turns = await only_conversation(steno), []

    async def settled() -> bool:  # both exchanges (or more), none pending
        nonlocal turns
        turns = await steno.history(conversation)
        return len(turns) >= 4 and all(t["status"] != "pending" for t in turns)

    await until(settled)
    assert [(t["role"], t["content"]) for t in turns] == [
        ("user", "only once"),
        ("assistant", scripted_reply("only once")),
        ("user", "and once more"),
        ("assistant", scripted_reply("and once more")),
    ]


async def test_a_chat_completion_requested_again_under_its_key_is_the_same_unless_unstored(
    client: openai.AsyncOpenAI,
) -> None:
    """A stored completion is kept, its key with it; `store=false` keeps nothing and answers again."""
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
    kept, forgotten = ({"Idempotency-Key": new_id()} for _ in range(2))
    stored = [
        await client.chat.completions.create(model="scripted", messages=messages, store=True, extra_headers=kept)
        for _ in range(2)
    ]
    unstored = [
        await client.chat.completions.create(model="scripted", messages=messages, store=False, extra_headers=forgotten)
        for _ in range(2)
    ]
    assert stored[0].id == stored[1].id
    assert stored[1].choices[0].message.content == scripted_reply("hello")
    assert unstored[0].id != unstored[1].id
