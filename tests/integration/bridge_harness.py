"""Run the inference bridge in-process on scratch topics. Shared by its tests and its benchmark.

Scratch copies of the bridge's topics (same partition counts) keep these runs and the stack's
own bridge out of each other's way: neither serves the other's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from inference_bridge.service import Bridge
from inference_bridge.topics import Topics
from infra import kafka
from infra.settings import settings
from schemas.topics import Topic

READY_S = 20.0


@contextmanager
def scratch_topics(run: str) -> Iterator[Topics]:
    """Fresh copies of the bridge's topics, deleted afterwards."""
    scratch = Topics(*(replace(topic, name=f"test.{run}.{topic.name}") for topic in Topics().all()))
    kafka.ensure_topics({topic.name: topic.partitions for topic in scratch.all()})
    _wait_until_served(scratch.all())
    try:
        yield scratch
    finally:
        admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})  # must outlive its futures
        for done in admin.delete_topics([topic.name for topic in scratch.all()]).values():
            done.result(timeout=30)


def _wait_until_served(topics: list[Topic]) -> None:
    """A new partition answers offset queries only once its leader has loaded it."""
    client = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": "steno-tests"})
    deadline = time.monotonic() + READY_S
    try:
        for topic, partition in ((t, p) for t in topics for p in range(t.partitions)):
            while True:
                try:
                    client.get_watermark_offsets(TopicPartition(topic.name, partition), timeout=READY_S)
                    break
                except KafkaException:
                    assert time.monotonic() < deadline, f"{topic.name}[{partition}] has no leader"
    finally:
        client.close()


@dataclass(frozen=True)
class RunningBridge:
    group: str
    task: asyncio.Task[None]
    stopping: asyncio.Event

    async def stop(self) -> None:
        """Ask the bridge to stop (SIGTERM does this) and wait until it has."""
        self.stopping.set()
        await self.task

    async def crash(self) -> None:
        """Stop at once, draining and committing nothing, as if the process had died."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@asynccontextmanager
async def running_bridge(
    topics: Topics,
    scripted: Mapping[str, Any],
    group: str | None = None,
    endpoints: list[str] | None = None,
    **config: Any,
) -> AsyncIterator[RunningBridge]:
    """A bridge on `topics`, in the given consumer group or a new one (deleted afterwards).

    `scripted`: the sampling parameters it sends the scripted model (script, pace, failures);
    `config`: BridgeSettings fields to override.
    """
    new_group = group is None
    group = group or f"steno-bridge-test-{uuid.uuid4().hex}"
    bridge = Bridge(
        settings.bridge.model_copy(update=config),
        endpoints or settings.triton.bridge_endpoints,
        redis_url=settings.redis.url,
        group_id=group,
        sampling={"scripted": scripted},
        topics=topics,
    )
    stopping = asyncio.Event()
    running = RunningBridge(group, asyncio.create_task(bridge.run(stopping)), stopping)
    try:
        yield running
    finally:
        if not running.task.cancelled():
            await running.stop()
        if new_group:
            await asyncio.to_thread(_delete_group, group)


def _delete_group(group: str) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    for future in admin.delete_consumer_groups([group]).values():
        future.result(timeout=10)
