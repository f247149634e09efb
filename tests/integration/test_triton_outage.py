"""Triton unreachable: the client gets an `error` event and history records the failure.

Stops the real tritonserver for the length of one message, then brings it back.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra import process, triton
from tests.integration.steno_client import StenoClient

pytestmark = pytest.mark.integration


@pytest.fixture
def triton_stopped() -> Iterator[None]:
    process.stop(triton.service())
    try:
        yield
    finally:
        process.start(triton.service())


async def test_an_unreachable_triton_becomes_an_error_event(triton_stopped: None) -> None:
    client = StenoClient()
    try:
        conversation = await client.new_conversation()
        ids = await client.send(conversation, "is anybody there?")

        events = await client.events(ids["response_id"])

        assert [e.event for e in events][-1] == "error"
        assert events[-1].data["detail"], "the error says what went wrong"
        reply = (await client.settled_history(conversation))[1]
        assert reply["status"] == "failed"
    finally:
        await client.close()
