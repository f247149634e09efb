"""A produced event's Delivery: settled on the delivery thread, awaited on the event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import cast

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from infra.kafka_clients import Delivery


def delivered() -> Message:
    """Stands in for the delivered message, which only librdkafka can make."""
    return cast(Message, object())


def settle_from_another_thread(delivery: Delivery, err: KafkaError | None, msg: Message | None) -> None:
    thread = threading.Thread(target=delivery.settle, args=(err, msg))
    thread.start()
    thread.join()


async def test_an_acknowledgement_that_came_first_is_returned_at_once() -> None:
    delivery, message = Delivery(threading.Lock()), delivered()
    settle_from_another_thread(delivery, None, message)

    assert await delivery is message
    assert await delivery is message  # awaited again: the same answer


async def test_an_awaited_delivery_wakes_its_waiter_when_acknowledged() -> None:
    delivery, message = Delivery(threading.Lock()), delivered()
    waiting = asyncio.ensure_future(delivery)
    await asyncio.sleep(0)  # the waiter is registered
    assert not waiting.done()

    settle_from_another_thread(delivery, None, message)

    assert await asyncio.wait_for(waiting, timeout=5) is message


@pytest.mark.parametrize("awaited_first", [False, True])
async def test_a_refused_event_raises_for_whoever_awaits_it(awaited_first: bool) -> None:
    delivery = Delivery(threading.Lock())
    waiting = asyncio.ensure_future(delivery) if awaited_first else None
    await asyncio.sleep(0)

    settle_from_another_thread(delivery, KafkaError(KafkaError._MSG_TIMED_OUT), None)

    with pytest.raises(KafkaException):
        await asyncio.wait_for(waiting if waiting is not None else delivery, timeout=5)
