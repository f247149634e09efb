"""After a rebalance, the processors resume each partition at the group's committed offset, even
when aiokafka finds none because the group's coordinator was still loading (see
`stream_processors.committed_offsets`).

aiokafka's lookup is made to answer as it does then: an OffsetFetch response that carries only a
top-level error has no partitions, which aiokafka reads as "no committed offset". A clean-clone CI
run saw the processors read their partitions again from the start after a frozen broker.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import faust
import pytest
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from projections.consuming import forget_committed_offsets
from schemas.events import DeadLetter
from stream_processors.app import Topics, create_app
from tests.integration.log_io import committed_to_end, produce_raw, values
from tests.integration.processors_harness import consumer_from_start, scratch_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RUN = f"resume-{uuid.uuid4().hex[:10]}"
GROUP = f"test-{RUN}"
CONVERSATION = str(uuid.uuid4())
WAIT_S = 60.0


async def none_committed(
    self: GroupCoordinator, partitions: list[TopicPartition]
) -> dict[TopicPartition, OffsetAndMetadata]:
    """aiokafka's reading of a coordinator that is loading the group's offsets (each of its two
    lookups, the fetcher's for positions and `seek_to_committed`'s, makes this request)."""
    return {}


async def running(topics: Topics) -> faust.App:
    app = create_app(GROUP, topics, cache_namespace=RUN, offset_reset="earliest")
    await app.start()
    deadline = time.monotonic() + WAIT_S
    while not app.consumer.assignment():
        assert time.monotonic() < deadline, "the app never got its partitions"
        await asyncio.sleep(0.1)
    return app


async def committed_everything(topics: Topics) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await asyncio.to_thread(committed_to_end, GROUP, [topics.conversations]):
        assert time.monotonic() < deadline, "the app did not commit what it handled"
        await asyncio.sleep(0.2)


async def test_a_worker_resumes_at_the_committed_offset_though_aiokafka_finds_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three records handled and committed; the worker restarted, aiokafka blind to the commits:
    the next record's dead letter comes right after the first three's, none of them handled again."""
    with scratch_topics(RUN) as topics:
        try:
            first = await running(topics)
            try:
                for n in range(3):
                    produce_raw(topics.conversations, CONVERSATION, f"not an event {n}".encode())
                await committed_everything(topics)
            finally:
                await first.stop()

            monkeypatch.setattr(GroupCoordinator, "_do_fetch_commit_offsets", none_committed)
            second = await running(topics)
            try:
                produce_raw(topics.conversations, CONVERSATION, b"not an event 3")
                reader = consumer_from_start([topics.dead_letters])
                try:
                    letters = await asyncio.to_thread(values, reader, 4, WAIT_S)
                finally:
                    reader.close()
            finally:
                await second.stop()
        finally:
            forget_committed_offsets(GROUP)
    assert [DeadLetter.model_validate_json(letter).source_offset for letter in letters] == [0, 1, 2, 3]
