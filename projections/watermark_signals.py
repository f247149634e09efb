"""Wake-ups for readers waiting on the active context's watermark (rule 3), instead of a poll.

The projection's apply script publishes each partition's new watermark on the watermark's own
key as a Redis channel. A context assembler waiting for the cache to cover a message takes the
partition's signal before it reads the watermark, so a move published in between still wakes
it; woken, it reads the watermark again itself. The signal only ends a wait early: a waiter
polls anyway (every `WATERMARK_POLL_S`), so a lost message (not yet subscribed, Redis
restarting) costs a poll interval, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import logging
import re

import redis.asyncio as redis

from infra.backoff import doubling

CHANNELS = "*:ctx:{*}:applied"  # every generation's watermark keys (`ActiveContext._watermark_key`)
PARTITION = re.compile(r":ctx:\{(\d+)\}:applied$")
RESUBSCRIBE_FIRST_S, RESUBSCRIBE_MAX_S = 0.1, 5.0

log = logging.getLogger(__name__)


class WatermarkSignals:
    """One subscription per process; a signal per partition, whatever the generation (a swap
    writes two generations for a while: a waiter then wakes once more than it needs)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._signals: dict[int, asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None
        self.listening = False  # subscribed: a watermark published from now on wakes its waiters

    def next(self, partition: int) -> asyncio.Event:
        """The event set when the partition's watermark next moves (take it before reading the
        watermark). Starts listening on first use, and again should the listener have died."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen_forever(), name="watermark-signals")
        return self._signals.setdefault(partition, asyncio.Event())

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)

    async def _listen_forever(self) -> None:
        waits = doubling(RESUBSCRIBE_FIRST_S, RESUBSCRIBE_MAX_S)
        while True:
            try:
                await self._listen()
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if self.listening:  # it had resubscribed: a new outage, asked about soon again
                    waits = doubling(RESUBSCRIBE_FIRST_S, RESUBSCRIBE_MAX_S)
                self.listening = False
                wait = next(waits)
                log.warning("watermark signals lost (%r): waiters poll until resubscribed in %.1fs", exc, wait)
                await asyncio.sleep(wait)

    async def _listen(self) -> None:
        async with self._client.pubsub() as pubsub:
            await pubsub.psubscribe(CHANNELS)
            async for message in pubsub.listen():
                if message["type"] == "psubscribe":  # Redis confirms: publishes from now on reach us
                    self.listening = True
                elif (matched := PARTITION.search(_text(message["channel"]))) is not None:
                    self._wake(int(matched.group(1)))

    def _wake(self, partition: int) -> None:
        signal = self._signals.pop(partition, None)
        if signal is not None:
            signal.set()


def _text(channel: str | bytes) -> str:
    return channel.decode() if isinstance(channel, bytes) else channel
