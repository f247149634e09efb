"""A rebalance callback of the bridge that cannot return ends the bridge (recorded here, not
done), naming where it hangs: librdkafka waits for the callback, so a bridge whose callback hangs
stays out of its consumer group for good, alive and serving nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import cast

import pytest
from confluent_kafka import Consumer, TopicPartition

from inference_bridge import service
from inference_bridge.service import Bridge
from infra import wedged
from infra.settings import settings
from tests.unit.recorded_exits import Exits, recorded_exits


class HangingCommits:
    """Stands in for the consumer: its synchronous commit never returns (a coordinator that
    never answers), until the process's recorded exit."""

    def __init__(self, exits: Exits) -> None:
        self._exits = exits

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert self._exits.happened.wait(timeout=10), "the callback's deadline never ended the bridge"

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        """Letting go once the commit returned: nothing to record."""


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The bridge's event loop, on a thread of its own as in the bridge (the callback runs on the
    consumer's thread and hands the release of its generations to the loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="event-loop")
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def test_a_revocation_whose_commit_never_returns_ends_the_bridge(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    exits = recorded_exits(monkeypatch)
    monkeypatch.setattr(service, "RELEASE_S", 0.2)
    bridge = Bridge(settings.bridge, [], redis_url=settings.redis.url)
    bridge._loop = loop
    bridge._offsets.start(0, 5)
    bridge._offsets.finish(0, 5)  # a finished request not committed yet: the revocation commits it
    consumer = HangingCommits(exits)

    bridge._on_revoke(cast(Consumer, consumer), [TopicPartition("steno.inference-requests", 0)])

    assert exits.statuses == [wedged.EXIT_WEDGED]
    assert "letting go of revoked partitions [0] did not end within 0.2 s" in caplog.text
    assert "in commit" in caplog.text  # the stack of the thread it hangs in
