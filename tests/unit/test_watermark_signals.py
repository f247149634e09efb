"""Resubscribing to the watermark signals: soon after each new outage, ever less often within one."""

import asyncio

import redis.asyncio as redis

from projections import watermark_signals
from projections.watermark_signals import RESUBSCRIBE_FIRST_S, WatermarkSignals


async def test_the_waits_start_again_from_the_first_after_a_resubscription(monkeypatch) -> None:
    signals = WatermarkSignals(redis.Redis())  # never connects: its listening is replaced below
    subscribed_between = iter([False, True, False])  # the second try subscribes, then loses Redis
    done = asyncio.Event()

    async def listen() -> None:
        subscribed = next(subscribed_between, None)
        if subscribed is None:
            done.set()
            await asyncio.Event().wait()  # listening for good
        signals.listening = bool(subscribed)
        raise redis.ConnectionError("Redis went away")

    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded_sleep(seconds: float) -> None:
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(signals, "_listen", listen)
    monkeypatch.setattr(watermark_signals.asyncio, "sleep", recorded_sleep)
    signals.next(0)  # starts the listener
    await asyncio.wait_for(done.wait(), 5)
    await signals.aclose()
    assert waits == [RESUBSCRIBE_FIRST_S, RESUBSCRIBE_FIRST_S, RESUBSCRIBE_FIRST_S * 2]
