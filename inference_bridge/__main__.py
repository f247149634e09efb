"""`python -m inference_bridge`: serve inference requests until SIGTERM (or Ctrl-C)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from typing import Any

import uvloop

from inference_bridge.service import GROUP_ID, Bridge
from inference_bridge.topics import Topics
from infra import garbage_collector
from infra.settings import settings


async def main(
    group_id: str = GROUP_ID, sampling: Mapping[str, Mapping[str, Any]] | None = None, topics: Topics = Topics()
) -> None:
    """SIGTERM drains (settings.bridge.drain_s), then leaves the group; the defaults are steno's own
    group, models and topics (the tests run the same process on scratch ones)."""
    garbage_collector.tune()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bridge = Bridge(
        settings.bridge,
        settings.triton.bridge_endpoints,
        redis_url=settings.redis.url,
        group_id=group_id,
        sampling=sampling
        if sampling is not None
        else {name: model.sampling for name, model in settings.models.items()},
        topics=topics,
    )
    garbage_collector.freeze_startup()  # what the imports and settings built lives as long as the process
    await bridge.run(stop)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(main())
