"""`python -m projections`: keep the history and context views up to date until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from projections.runner import serve


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(stop)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(main())
