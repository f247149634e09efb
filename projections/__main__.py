"""`python -m projections`: keep the history and context views up to date until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from infra import garbage_collector
from projections.runner import serve


async def main() -> None:
    garbage_collector.tune()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    garbage_collector.freeze_startup()  # what the imports and settings built lives as long as the process
    await serve(stop)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(main())
