"""Records are acked once their events are delivered, in whatever order deliveries settle; the
agent goes on meanwhile, up to the window's limit; a failed delivery acks nothing more and stops."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stream_processors.delivery_window import DeliveryWindow


class Stops:
    def __init__(self) -> None:
        self.reasons: list[BaseException] = []

    async def __call__(self, reason: BaseException) -> None:
        self.reasons.append(reason)


def deliveries(n: int) -> list[asyncio.Future[Any]]:
    loop = asyncio.get_running_loop()
    return [loop.create_future() for _ in range(n)]


async def settle() -> None:
    """Let the done-callbacks of futures resolved just now run."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_records_are_acked_only_once_delivered_and_in_any_order() -> None:
    window, acked = DeliveryWindow(10, Stops()), []
    first, second = deliveries(2)

    await window.ack_after(first, lambda: acked.append(1))
    await window.ack_after(second, lambda: acked.append(2))  # handed over before the first settled
    await settle()
    assert (acked, window.unsettled) == ([], 2)

    second.set_result([])
    first.set_result([])
    await settle()
    assert (acked, window.unsettled) == ([2, 1], 0)


async def test_a_full_window_holds_the_agent_until_a_delivery_settles() -> None:
    window = DeliveryWindow(2, Stops())
    first, second, third = deliveries(3)
    await window.ack_after(first, lambda: None)
    await window.ack_after(second, lambda: None)

    held = asyncio.create_task(window.ack_after(third, lambda: None))
    await settle()
    assert not held.done()

    first.set_result([])
    await asyncio.wait_for(held, timeout=5)
    assert window.unsettled == 2


async def test_a_failed_delivery_is_never_acked_and_stops_the_app() -> None:
    stops, acked = Stops(), []
    window = DeliveryWindow(10, stops)
    failing, later = deliveries(2)
    await window.ack_after(failing, lambda: acked.append("failed"))
    await window.ack_after(later, lambda: acked.append("later"))

    failing.set_exception(RuntimeError("broker unreachable"))
    later.set_result([])
    await settle()

    assert acked == ["later"]  # Faust commits only up to the gap the failed record leaves
    assert [str(reason) for reason in stops.reasons] == ["broker unreachable"]
    with pytest.raises(RuntimeError, match="broker unreachable"):
        await window.ack_after(deliveries(1)[0], lambda: acked.append("after"))
    assert acked == ["later"]
