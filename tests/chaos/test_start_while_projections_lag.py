"""A conversation started while the projections are behind is the creator's at once: 201, and
its messages are answered. The creator waits a few seconds for the projection to list it
(read-your-writes); past that, Kafka has the start under the creator's name, which the API
process that wrote it knows. CI found the API answering 404 "no conversation ... for this user"
to the very request that had started it, while the projection caught up after a frozen broker."""

from __future__ import annotations

import asyncio
import os
import signal
from functools import partial

import pytest

from tests.chaos.faults import heal, steno_pids
from tests.integration.steno_client import StenoClient, scripted_reply, until

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(120)]


async def test_a_conversation_started_while_the_projections_are_paused_is_created_and_answered() -> None:
    alice = StenoClient()
    paused = steno_pids("projections")
    try:
        for pid in paused:
            os.kill(pid, signal.SIGSTOP)
        try:
            conversation = await alice.new_conversation()
            sent = await alice.post_message(conversation, "started while history was behind")
        finally:
            for pid in paused:
                os.kill(pid, signal.SIGCONT)
            await asyncio.to_thread(heal)  # back in its group before the next test
        assert sent.status_code == 202, sent.text
        await alice.events(sent.json()["response_id"])
        turns = await alice.settled_history(conversation, timeout_s=60)
        await until(partial(is_listed, alice, conversation), timeout_s=60)
    finally:
        await alice.close()
    assert [(t["role"], t["content"], t["status"]) for t in turns] == [
        ("user", "started while history was behind", "accepted"),
        ("assistant", scripted_reply("started while history was behind"), "completed"),
    ]


async def is_listed(client: StenoClient, conversation: str) -> bool:
    response = await client.http.get("/v1/conversations")
    assert response.status_code == 200, response.text
    return conversation in [c["id"] for c in response.json()]
