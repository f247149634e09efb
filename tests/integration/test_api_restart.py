"""A deploy or a crash of the API mid-reply: the client reconnects with its last SSE id and gets
exactly the rest of the reply (design rules 5 and 9), from a process that never saw its start."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from infra import supervisor
from infra.settings import settings
from tests.integration.steno_client import StenoClient, scripted, text_of, until

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
    old_pid = supervisor.pid("api")
    assert old_pid is not None

    os.kill(old_pid, signal.SIGKILL)
    await until(lambda: _api_serving_again(old_pid), timeout_s=30)
    after = await alice.events(accepted["response_id"], last_event_id=before[-1].id)

    ids = [int(sse.id) for sse in before + after if sse.id]
    assert ids == sorted(set(ids)), "an event was delivered twice or out of order"
    assert after[-1].event == "done"
    [*_, reply] = await alice.settled_history(conversation)
    assert text_of(before + after) == reply["content"]
