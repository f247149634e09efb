"""Run the inference bridge in-process on scratch topics. Shared by its tests and its benchmark.

Scratch copies of the bridge's topics (same partition counts) keep these runs and the stack's
own bridge out of each other's way: neither serves the other's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from confluent_kafka.admin import AdminClient

from inference_bridge.service import Bridge
from inference_bridge.topics import Topics
from infra.settings import settings
from tests.integration.scratch import scratch_copies


@contextmanager
def scratch_topics(run: str) -> Iterator[Topics]:
    """Fresh copies of the bridge's topics, deleted afterwards."""
    with scratch_copies(run, Topics().all()) as copies:
        yield Topics(*copies)


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
