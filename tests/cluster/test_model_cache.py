"""With two Triton servers, a conversation's next turn goes back to the server that answered its
last one, whose KV cache holds the chat so far (the bridge's affinity, inference_bridge/router.py;
the model's cache slots, infra/models/_common/cache_slots.py): the server evaluates only the new
message. Without affinity the least-busy rule sends a lone conversation's turns to the servers in
turn, and each would evaluate the whole chat."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import httpx
import pytest

from infra.settings import settings
from tests.cluster.conftest import timeout
from tests.integration.steno_client import StenoClient

pytestmark = [pytest.mark.cluster, pytest.mark.integration, timeout(180)]


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


async def answered(alice: StenoClient, conversation: str, content: str) -> dict[str, float]:
    """Send a message to smollm2 and read its reply to the end; the counters' change, once the
    server counted the request (it counts the outcome after the tokens)."""
    before = counters()
    ids = await alice.send(conversation, content, model="smollm2")
    events = await alice.events(ids["response_id"])
    assert events[-1].data["outcome"] == "completed"
    deadline = time.monotonic() + 10
    while (after := counters())["completed"] <= before["completed"]:
        assert time.monotonic() < deadline, "the server never counted the request"
        await asyncio.sleep(0.1)
    return {key: after[key] - before[key] for key in after}


async def test_a_conversations_next_turn_is_evaluated_only_from_its_new_message(alice: StenoClient) -> None:
    assert settings.triton.servers >= 2, "needs a fleet to route over"
    conversation = await alice.new_conversation()

    first = await answered(alice, conversation, f"My name is {uuid.uuid4().hex}. Name one colour, in one word.")
    second = await answered(alice, conversation, "Thank you. Name another colour, in one word.")

    first_prompt = first["cached"] + first["evaluated"]
    assert second["cached"] >= first_prompt, f"the first turn's prompt was {first_prompt} tokens: {second}"
    assert second["evaluated"] < first_prompt
