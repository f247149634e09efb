"""A deploy or a crash of the API mid-reply: the client reconnects with its last SSE id and gets
exactly the rest of the reply (design rules 5 and 9), from a process that never saw its start."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import openai
import psutil
import pytest
from openai.types.responses import ResponseErrorEvent, ResponseTextDeltaEvent

from infra import supervisor
from infra.settings import settings
from ingest_api.auth import issue_token
from ingest_api.openai_api.reply import SHUTTING_DOWN
from tests.integration.steno_client import Sse, StenoClient, scripted, text_of, until

pytestmark = pytest.mark.chaos

WORDS = " ".join(f"w{n}" for n in range(60))


async def _api_serving_again(old_pid: int) -> bool:
    pid = supervisor.pid("api")
    if pid is None or pid == old_pid:
        return False
    try:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"{settings.api.url}/readyz", timeout=2)).status_code == 200
    except httpx.TransportError:
        return False


async def test_a_reply_resumed_across_an_api_crash_has_no_gap(alice: StenoClient) -> None:
    conversation = await alice.new_conversation()
    accepted = await alice.send(conversation, scripted(WORDS, itl_ms=60))
    before = await alice.events(accepted["response_id"], limit=10)
    old_pid = _api_pid()

    os.kill(old_pid, signal.SIGKILL)
    await until(lambda: _api_serving_again(old_pid), timeout_s=30)
    after = await alice.events(accepted["response_id"], last_event_id=before[-1].id)

    await _assert_whole_reply(alice, conversation, before + after)


async def test_sigterm_ends_open_streams_cleanly_and_the_client_resumes(alice: StenoClient) -> None:
    """A deploy: the stream ends with its last chunk (no protocol error), the process exits
    without waiting for the reply, and the client picks up after its last id."""
    conversation = await alice.new_conversation()
    accepted = await alice.send(conversation, scripted(WORDS, itl_ms=100))
    reading = asyncio.create_task(alice.events(accepted["response_id"]))
    await until(lambda: _has_tokens(alice, accepted["response_id"]), timeout_s=20)
    old_pid = _api_pid()

    os.kill(old_pid, signal.SIGTERM)
    before = await asyncio.wait_for(reading, timeout=30)  # raises RemoteProtocolError on a cut stream
    await asyncio.to_thread(psutil.Process(old_pid).wait, 30)
    await until(lambda: _api_serving_again(old_pid), timeout_s=30)
    after = await alice.events(accepted["response_id"], last_event_id=before[-1].id)

    assert before[-1].event == "token", "the stream should have ended before the reply did"
    await _assert_whole_reply(alice, conversation, before + after)


async def test_sigterm_ends_an_openai_chat_stream_with_an_error_the_sdk_raises(alice: StenoClient) -> None:
    """A chat completion cannot be resumed on another instance: its stream must not just stop,
    which the SDK would read as a whole reply. It ends with an error event, and the reply is
    stopped (cancelled in history) as for a client that left."""
    sdk = openai.AsyncOpenAI(base_url=f"{settings.api.url}/v1", api_key=issue_token(alice.user), max_retries=0)
    stream = await sdk.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": scripted(WORDS, itl_ms=100)}], stream=True
    )
    old_pid = _api_pid()
    received: list[str] = []

    async def read_terminating_the_api() -> None:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
            if len(received) == 2:  # the role's chunk, then a token
                os.kill(old_pid, signal.SIGTERM)

    with pytest.raises(openai.APIError, match="shutting down") as raised:
        await read_terminating_the_api()
    await sdk.close()
    await asyncio.to_thread(psutil.Process(old_pid).wait, 30)
    await until(lambda: _api_serving_again(old_pid), timeout_s=30)

    [conversation] = [c["id"] for c in (await alice.http.get("/v1/conversations")).json()]
    [_, reply] = await alice.settled_history(conversation, timeout_s=20)
    assert raised.value.body == {
        "message": SHUTTING_DOWN,
        "type": "server_error",
        "param": None,
        "code": "server_shutting_down",
    }
    assert reply["status"] == "cancelled" and reply["content"].startswith("".join(received))


async def test_sigterm_ends_a_foreground_responses_stream_with_an_error_event(alice: StenoClient) -> None:
    """The same for the Responses API: a foreground stream's reply is stopped, and its stream says
    so with OpenAI's `error` event rather than just stopping."""
    sdk = openai.AsyncOpenAI(base_url=f"{settings.api.url}/v1", api_key=issue_token(alice.user), max_retries=0)
    stream = await sdk.responses.create(model="scripted", input=scripted(WORDS, itl_ms=100), stream=True)
    old_pid = _api_pid()
    events = []
    async for event in stream:
        events.append(event)
        if isinstance(event, ResponseTextDeltaEvent) and len(events) == 5:  # created, in_progress, two added
            os.kill(old_pid, signal.SIGTERM)
    await sdk.close()
    await asyncio.to_thread(psutil.Process(old_pid).wait, 30)
    await until(lambda: _api_serving_again(old_pid), timeout_s=30)

    [conversation] = [c["id"] for c in (await alice.http.get("/v1/conversations")).json()]
    [_, reply] = await alice.settled_history(conversation, timeout_s=20)
    received = "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent))
    assert isinstance(events[-1], ResponseErrorEvent) and events[-1].message == SHUTTING_DOWN
    assert reply["status"] == "cancelled" and reply["content"].startswith(received)


async def test_sigterm_answers_a_waiting_chat_completion_503_and_stops_its_reply(alice: StenoClient) -> None:
    """A client waiting for a whole (non-streamed) reply gets a 503, which OpenAI's SDKs retry,
    rather than a 500 or a cut connection; the reply it will not read is stopped."""
    sdk = openai.AsyncOpenAI(base_url=f"{settings.api.url}/v1", api_key=issue_token(alice.user), max_retries=0)
    content = scripted(WORDS, itl_ms=100)
    waiting = asyncio.create_task(
        sdk.chat.completions.create(model="scripted", messages=[{"role": "user", "content": content}])
    )
    await until(lambda: _listed_conversations(alice, 1), timeout_s=20)
    old_pid = _api_pid()

    os.kill(old_pid, signal.SIGTERM)
    with pytest.raises(openai.APIStatusError, match="shutting down") as raised:
        await waiting
    await sdk.close()
    await asyncio.to_thread(psutil.Process(old_pid).wait, 30)
    await until(lambda: _api_serving_again(old_pid), timeout_s=30)

    [conversation] = [c["id"] for c in (await alice.http.get("/v1/conversations")).json()]
    [_, reply] = await alice.settled_history(conversation, timeout_s=20)
    assert raised.value.status_code == 503 and raised.value.body == {
        "message": SHUTTING_DOWN,
        "type": "server_error",
        "param": None,
        "code": "server_shutting_down",
    }
    assert reply["status"] == "cancelled"


async def _listed_conversations(client: StenoClient, count: int) -> bool:
    return len((await client.http.get("/v1/conversations")).json()) == count


def _api_pid() -> int:
    pid = supervisor.pid("api")
    assert pid is not None, "supervisord runs no API: `steno up`"
    return pid


async def _has_tokens(client: StenoClient, response_id: str) -> bool:
    return any(sse.event == "token" for sse in await client.events(response_id, limit=2))


async def _assert_whole_reply(client: StenoClient, conversation: str, received: list[Sse]) -> None:
    ids = [int(sse.id) for sse in received if sse.id]
    assert ids == sorted(set(ids)), "an event was delivered twice or out of order"
    assert received[-1].event == "done"
    [*_, reply] = await client.settled_history(conversation)
    assert text_of(received) == reply["content"]
