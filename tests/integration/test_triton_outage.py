"""Triton killed mid-reply and started again: the reply is retried (`restart`, attempt 2) once the
server serves the model again, and completes; the user never sees an error for it.

Kills the real tritonserver (kill -9 of its process group) while a reply streams, then starts it
again. The budget running out (the reply then fails) is checked against an endpoint where no
server listens, in test_bridge.py, rather than by keeping the shared Triton down for 45 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator

import psutil
import pytest

from infra import process, triton
from schemas.events import ResponseCompleted, ResponseRestarted, TokenGenerated
from tests.integration.bridge_harness import running_bridge, scratch_topics
from tests.integration.steno_client import Sse, StenoClient, scripted, text_of
from tests.integration.test_bridge import LONG, LONG_SCRIPT, Conversation, texts

pytestmark = pytest.mark.integration

RESTART_WAIT_S = 60.0


@pytest.fixture
def triton_back_afterwards() -> Iterator[None]:
    """Whatever happened in the test, Triton runs again after it."""
    yield
    process.start(triton.service())


async def kill_and_restart_triton() -> float:
    """kill -9 the running tritonserver, start it again, return when it serves its models.
    Returns the wall-clock time of the kill."""
    pid = process.running_pid(triton.service())
    assert pid is not None, "Triton is not running: start the stack with `make up`"
    dying = psutil.Process(pid)
    os.killpg(pid, signal.SIGKILL)
    killed_at = time.time()
    # Gone for good before the new one starts: a restart racing the dying process finds its ports
    # still bound and exits (a flaky StartError, seen in back-to-back runs).
    await asyncio.to_thread(dying.wait, 30)
    await asyncio.to_thread(process.start, triton.service())
    return killed_at


async def test_the_bridge_retries_a_reply_cut_by_a_triton_crash_once_triton_is_back(
    triton_back_afterwards: None,
) -> None:
    with scratch_topics(f"triton-outage-{uuid.uuid4().hex[:12]}") as topics:
        conversation = Conversation(topics)
        request = conversation.request(max_tokens=200)
        try:
            async with running_bridge(topics, LONG):
                await conversation.send(request)
                await conversation.tokens.until(lambda e: isinstance(e, TokenGenerated) and e.seq == 2)
                killed_at = await kill_and_restart_triton()
                back_at = time.time()
                async with asyncio.timeout(RESTART_WAIT_S):
                    stream = await conversation.stream_of(request.response_id)
                    completed = await conversation.outcome_of(request.response_id)
        finally:
            conversation.close()

    restarts = [e for e in stream if isinstance(e, ResponseRestarted)]
    assert restarts, "the reply was retried, not failed"
    retry = stream[stream.index(restarts[-1]) :]
    assert "".join(texts(retry)) == LONG_SCRIPT
    assert isinstance(completed, ResponseCompleted)
    assert (completed.text, completed.attempt) == (LONG_SCRIPT, restarts[-1].attempt)
    print(
        f"\nTriton kill -9 -> served again {back_at - killed_at:.1f}s"
        f" -> restart event {restarts[0].occurred_at.timestamp() - killed_at:.1f}s"
    )


async def to_the_end(client: StenoClient, response_id: str, last_event_id: str) -> list[Sse]:
    """The stream's events after `last_event_id` up to its end, reconnecting from the last id
    whenever the API closes the stream before (as a browser does: others restart the API too)."""
    events: list[Sse] = []
    async with asyncio.timeout(RESTART_WAIT_S):
        while not events or events[-1].event not in ("done", "error"):
            events += await client.events(response_id, last_event_id=events[-1].id if events else last_event_id)
    return events


async def test_a_reply_cut_by_a_triton_crash_completes_for_the_user(triton_back_afterwards: None) -> None:
    """The same through the running stack: API, processors, the stack's bridge, projections."""
    client = StenoClient()
    try:
        conversation = await client.new_conversation()
        content = " ".join(f"word{i}" for i in range(60))
        ids = await client.send(conversation, scripted(content, itl_ms=100))
        events = await client.events(ids["response_id"], limit=5)
        await kill_and_restart_triton()
        events += await to_the_end(client, ids["response_id"], events[-1].id)

        assert events[-1].event == "done", events[-1]
        assert "restart" in [e.event for e in events], "the reply was retried, not failed"
        reply = (await client.settled_history(conversation))[1]
        assert reply["status"] == "completed"
        assert text_of(events) == reply["content"]
    finally:
        await client.close()
