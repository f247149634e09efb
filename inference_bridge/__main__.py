"""`python -m inference_bridge`: serve inference requests until SIGTERM (or Ctrl-C)."""

from __future__ import annotations

import asyncio
import logging
import signal

from inference_bridge.service import Bridge
from infra.settings import settings


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bridge = Bridge(
        settings.bridge,
        settings.triton.bridge_endpoints,
        redis_url=settings.redis.url,
        sampling={name: model.sampling for name, model in settings.models.items()},
    )
    await bridge.run(stop)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
