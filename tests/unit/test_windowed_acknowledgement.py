"""The token producer's shared acknowledgement (`infra.windowed_producer.Acknowledgement`)."""

from __future__ import annotations

import asyncio

from infra.windowed_producer import Acknowledgement


async def test_a_cancelled_waiter_leaves_the_acknowledgement_to_the_others() -> None:
    """A window's events on one partition share it: an abandoned generation cancelled while
    waiting must not cancel it for the bridge, which waits on it before the request's retry."""
    acknowledgement = Acknowledgement(asyncio.get_running_loop().create_future())
    waiter = asyncio.create_task(_wait(acknowledgement))
    await asyncio.sleep(0)  # the waiter is waiting
    waiter.cancel()
    await asyncio.wait([waiter])

    assert waiter.cancelled() and not acknowledgement.future.done()
    acknowledgement.future.set_result("delivered")
    assert await acknowledgement == "delivered"


async def test_an_error_reaches_every_waiter() -> None:
    acknowledgement = Acknowledgement(asyncio.get_running_loop().create_future())
    waiters = [asyncio.create_task(_wait(acknowledgement)) for _ in range(2)]
    await asyncio.sleep(0)
    acknowledgement.future.set_exception(TimeoutError("no broker"))

    assert [type(e) for e in await asyncio.gather(*waiters, return_exceptions=True)] == [TimeoutError] * 2


async def _wait(acknowledgement: Acknowledgement) -> object:
    return await acknowledgement
