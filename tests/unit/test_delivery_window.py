"""Records are acked once their events are delivered, in offset order whatever order deliveries
settle in; the agent goes on meanwhile, up to the window's limit; a failed delivery acks nothing
more and stops."""

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


async def test_records_are_acked_once_delivered_and_in_offset_order() -> None:
    """Faust would commit a record acked before the one ahead of it past both (see the module)."""
    window, acked = DeliveryWindow(10, Stops()), []
    first, second, third = deliveries(3)

    await window.ack_after(first, lambda: acked.append(1))
    await window.ack_after(second, lambda: acked.append(2))  # handed over before the first settled
    await window.ack_after(third, lambda: acked.append(3))
    await settle()
    assert (acked, window.unacked) == ([], 3)

    second.set_result([])
    await settle()
    assert (acked, window.unacked) == ([], 3)  # delivered, but the record ahead of it is not

    first.set_result([])
    await settle()
    assert (acked, window.unacked) == ([1, 2], 1)

    third.set_result([])
    await settle()
    assert (acked, window.unacked) == ([1, 2, 3], 0)


async def test_a_full_window_holds_the_agent_until_the_oldest_record_is_acked() -> None:
    window = DeliveryWindow(2, Stops())
    first, second, third = deliveries(3)
    await window.ack_after(first, lambda: None)
    await window.ack_after(second, lambda: None)

    held = asyncio.create_task(window.ack_after(third, lambda: None))
    second.set_result([])  # delivered, and still waiting for the first: it holds its room
    await settle()
    assert not held.done()

    first.set_result([])
    await asyncio.wait_for(held, timeout=5)
    assert window.unacked == 1


async def test_a_failed_delivery_acks_nothing_from_it_on_and_stops_the_app() -> None:
    stops, acked = Stops(), []
    window = DeliveryWindow(10, stops)
    before, failing, later = deliveries(3)
    await window.ack_after(before, lambda: acked.append("before"))
    await window.ack_after(failing, lambda: acked.append("failed"))
    await window.ack_after(later, lambda: acked.append("later"))

    before.set_result([])
    later.set_result([])
    failing.set_exception(RuntimeError("broker unreachable"))
    await settle()

    assert acked == ["before"]
    assert [str(reason) for reason in stops.reasons] == ["broker unreachable"]
    with pytest.raises(RuntimeError, match="broker unreachable"):
        await window.ack_after(deliveries(1)[0], lambda: acked.append("after"))
    assert acked == ["before"]
