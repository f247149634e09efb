"""With two Triton servers, a chat's next turn goes back to the server that answered its last
one (a conversation's, and an OpenAI client's, whose every request is a new conversation), whose
KV cache holds the chat so far (the bridge's affinity, inference_bridge/router.py; the model's
cache slots, infra/models/_common/cache_slots.py): the server evaluates only the new message.
Without affinity the least-busy rule sends a lone chat's turns to the servers in turn, and each
would evaluate the whole chat."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable
from typing import TypeVar

import httpx
import pytest

from infra.settings import settings
from tests.cluster.conftest import timeout
from tests.integration.steno_client import StenoClient

pytestmark = [pytest.mark.cluster, pytest.mark.integration, timeout(180)]

T = TypeVar("T")


def counters() -> dict[str, float]:
    """smollm2's counters summed over every Triton server: prompt tokens by source, requests."""
    totals = {"cached": 0.0, "evaluated": 0.0, "completed": 0.0}
    for server in range(settings.triton.servers):
        url = f"http://{settings.triton.server_host(server)}:{settings.triton.metrics_port}/metrics"
        body = httpx.get(url, timeout=5).text
        for source, value in re.findall(r'steno_prompt_tokens_total\{model="smollm2",source="(\w+)"\} (\S+)', body):
            totals[source] += float(value)
        completed = re.findall(r'steno_requests_total\{model="smollm2",outcome="completed"\} (\S+)', body)
        totals["completed"] += sum(float(value) for value in completed)
    return totals


async def counted(request: Awaitable[T]) -> tuple[T, dict[str, float]]:
    """The request's answer, and the counters' change once the server counted the request (it
    counts the outcome after the tokens)."""
    before = counters()
    answer = await request
    deadline = time.monotonic() + 10
    while (after := counters())["completed"] <= before["completed"]:
        assert time.monotonic() < deadline, "the server never counted the request"
        await asyncio.sleep(0.1)
    return answer, {key: after[key] - before[key] for key in after}


async def answered(alice: StenoClient, conversation: str, content: str) -> dict[str, float]:
    """Send a message to smollm2 and read its reply to the end; the counters' change."""

    async def ask() -> None:
        ids = await alice.send(conversation, content, model="smollm2")
        events = await alice.events(ids["response_id"])
        assert events[-1].data["outcome"] == "completed"

    _, change = await counted(ask())
    return change


async def completion(alice: StenoClient, chat: list[dict[str, str]]) -> tuple[str, dict[str, float]]:
    """An OpenAI client's chat completion of the chat on smollm2: its text, the counters' change."""

    async def ask() -> str:
        response = await alice.http.post("/v1/chat/completions", json={"model": "smollm2", "messages": chat})
        assert response.status_code == 200, response.text
        return str(response.json()["choices"][0]["message"]["content"])

    return await counted(ask())


async def test_a_conversations_next_turn_is_evaluated_only_from_its_new_message(alice: StenoClient) -> None:
    assert settings.triton.servers >= 2, "needs a fleet to route over"
    conversation = await alice.new_conversation()

    first = await answered(alice, conversation, f"My name is {uuid.uuid4().hex}. Name one colour, in one word.")
    second = await answered(alice, conversation, "Thank you. Name another colour, in one word.")

    first_prompt = first["cached"] + first["evaluated"]
    assert second["cached"] >= first_prompt, f"the first turn's prompt was {first_prompt} tokens: {second}"
    assert second["evaluated"] < first_prompt


async def test_an_openai_clients_next_turn_is_evaluated_only_from_its_new_message(alice: StenoClient) -> None:
    """Each of its requests is a new steno conversation, perhaps on another bridge: the chat's
    beginning, not its conversation id, picks the server. Four chats, so that picking the server
    at random (a conversation id's turn) passes by chance once in 16."""
    assert settings.triton.servers >= 2, "needs a fleet to route over"
    for _ in range(4):
        chat = [{"role": "user", "content": f"My name is {uuid.uuid4().hex}. Name one colour, in one word."}]

        reply, first = await completion(alice, chat)
        chat += [{"role": "assistant", "content": reply}, {"role": "user", "content": "Thank you. Another one?"}]
        _, second = await completion(alice, chat)

        first_prompt = first["cached"] + first["evaluated"]
        assert second["cached"] >= first_prompt, f"the first turn's prompt was {first_prompt} tokens: {second}"
        assert second["evaluated"] < first_prompt
