"""The bridge's token producer (`infra.windowed_producer`) on the real broker: a window's events of
every partition in one produce request, each partition's events in order and acknowledged only
once they are in the log, what is queued at a stop delivered, and nothing sent after a window
the broker did not acknowledge (that test freezes the broker for a few seconds: marked `chaos`).

Needs the broker that `make up` starts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiokafka.client import AIOKafkaClient
from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from infra import kafka_clients
from infra.windowed_producer import DeliveryTimedOut, EarlierWindowFailed, WindowedProducer
from schemas.events import new_id
from schemas.topics import TOKENS, Topic, partition_for
from tests.chaos.faults import server_pid
from tests.integration.scratch import scratch_copies

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def topic() -> Iterator[Topic]:
    with scratch_copies("windowed", [TOKENS]) as [copy]:
        yield copy


@pytest.fixture
async def producer(request: pytest.FixtureRequest) -> AsyncIterator[WindowedProducer]:
    window_ms = request.param if hasattr(request, "param") else 50
    windowed = WindowedProducer(window_ms, client_id="test-windowed")
    await windowed.start()
    yield windowed
    await windowed.stop()


def conversation_on_each_partition(topic: Topic) -> list[str]:
    """A conversation id per partition of `topic`, in partition order."""
    found: dict[int, str] = {}
    while len(found) < topic.partitions:
        conversation_id = new_id()
        found.setdefault(partition_for(conversation_id, topic), conversation_id)
    return [found[partition] for partition in range(topic.partitions)]


def logged(topic: Topic, partition: int) -> list[Message]:
    """Every record on one partition of `topic`, in order."""
    consumer = kafka_clients.consumer(f"test-read-{new_id()}")  # only assign(): joins no group
    try:
        _, end = consumer.get_watermark_offsets(TopicPartition(topic.name, partition), timeout=10)
        consumer.assign([TopicPartition(topic.name, partition, OFFSET_BEGINNING)])
        records: list[Message] = []
        deadline = time.monotonic() + 30
        while len(records) < end:
            assert time.monotonic() < deadline, f"{topic.name}[{partition}] not read to {end} in 30 s"
            records += [m for m in consumer.consume(500, timeout=1) if m.error() is None]
        return records
    finally:
        consumer.close()


def produce_requests(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The produce requests aiokafka sends from now on, as it sends them."""
    requests: list[Any] = []
    send = AIOKafkaClient.send

    def counted(client: AIOKafkaClient, node_id: int, request: Any, **kwargs: Any) -> Any:
        if type(request).__name__.startswith("ProduceRequest"):
            requests.append(request)
        return send(client, node_id, request, **kwargs)

    monkeypatch.setattr(AIOKafkaClient, "send", counted)
    return requests


async def test_a_windows_events_of_every_partition_go_in_one_produce_request(
    topic: Topic, producer: WindowedProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """librdkafka would send one request per partition; the broker handles each, and every
    consumer of the topic gets a fetch response for each."""
    requests = produce_requests(monkeypatch)
    senders = [producer.sender(topic, c) for c in conversation_on_each_partition(topic)]
    acks = [send_token(f"{i}-{n}".encode()) for n in range(3) for i, send_token in enumerate(senders)]
    await asyncio.gather(*acks)

    assert len(requests) == 1  # the six partitions' batches in it


async def test_each_partitions_events_land_in_order_and_are_acknowledged_once_logged(
    topic: Topic, producer: WindowedProducer
) -> None:
    first, second = conversation_on_each_partition(topic)[:2]
    to_first, to_second = producer.sender(topic, first), producer.sender(topic, second)
    before_ms = time.time_ns() // 1_000_000
    acks = [to_first(b"first 0"), to_second(b"second 0")]
    queued_ms = time.time_ns() // 1_000_000  # the window closes 50 ms later
    for n in range(1, 200):  # over several windows
        acks += [to_first(f"first {n}".encode()), to_second(f"second {n}".encode())]
        if n % 40 == 0:
            await asyncio.sleep(0.03)
    last_first, last_second = acks[-2], acks[-1]
    await asyncio.gather(last_first, last_second)  # nothing else awaited: the last vouch for the rest

    for partition, conversation_id, label in ((0, first, "first"), (1, second, "second")):
        records = [m for m in logged(topic, partition) if m.key() == conversation_id.encode()]
        assert [m.value() for m in records] == [f"{label} {n}".encode() for n in range(200)]
        assert all(m.timestamp()[1] >= before_ms for m in records)
        assert records[0].timestamp()[1] <= queued_ms  # CreateTime: when it was queued, not sent
    assert all(ack.future.done() and ack.future.exception() is None for ack in acks)


async def test_a_window_larger_than_a_batch_lands_whole_and_in_order(topic: Topic, producer: WindowedProducer) -> None:
    conversation_id = conversation_on_each_partition(topic)[3]
    send = producer.sender(topic, conversation_id)
    values = [f"{n:05} ".encode() * 200 for n in range(1_500)]  # 1.8 MB: two batches of at most 1 MB

    acknowledgements = [send(value) for value in values]
    await acknowledgements[-1]  # one partition's: they come in order

    assert [m.value() for m in logged(topic, 3) if m.key() == conversation_id.encode()] == values


@pytest.mark.parametrize("producer", [60_000], indirect=True)  # a window no test waits out
async def test_a_stop_delivers_what_is_queued(topic: Topic, producer: WindowedProducer) -> None:
    conversation_id = conversation_on_each_partition(topic)[2]
    ack = producer.sender(topic, conversation_id)(b"queued at the stop")

    await producer.stop()

    assert ack.future.done() and ack.future.exception() is None
    assert [m.value() for m in logged(topic, 2) if m.key() == conversation_id.encode()] == [b"queued at the stop"]


@pytest.mark.parametrize("producer", [60_000], indirect=True)
async def test_a_hurried_window_goes_without_waiting_out_its_linger(topic: Topic, producer: WindowedProducer) -> None:
    """A reply whose stream ended hurries its last tokens: its final event waits for them."""
    conversation_id = conversation_on_each_partition(topic)[4]
    ack = producer.sender(topic, conversation_id)(b"a reply's last token")

    producer.hurry()

    await asyncio.wait_for(ack, 20)  # the linger is a minute
    assert [m.value() for m in logged(topic, 4) if m.key() == conversation_id.encode()] == [b"a reply's last token"]


@pytest.mark.parametrize("producer", [60_000], indirect=True)
async def test_a_hurried_window_waits_for_the_window_before_to_be_acknowledged(
    topic: Topic, producer: WindowedProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load windows go back to back: if every reply that ended sent the open window at once,
    each would be a request of its own (aiokafka takes one batch a partition into a request)."""
    requests = produce_requests(monkeypatch)
    conversation_id = conversation_on_each_partition(topic)[5]
    send = producer.sender(topic, conversation_id)
    acks = [send(b"0")]
    producer.hurry()  # nothing in flight: the window goes now
    for n in (1, 2):
        acks.append(send(str(n).encode()))
        producer.hurry()  # the first window is not acknowledged yet: these wait for it, together

    await asyncio.wait_for(asyncio.gather(*acks), 20)  # the linger is a minute

    assert len(requests) == 2
    assert [m.value() for m in logged(topic, 5) if m.key() == conversation_id.encode()] == [b"0", b"1", b"2"]


@pytest.mark.chaos
async def test_a_window_the_broker_does_not_acknowledge_fails_and_nothing_is_sent_after_it(topic: Topic) -> None:
    """The broker freezes with a window in flight. aiokafka would retry it for as long as the
    broker is away, and send the windows queued behind it once one gave up: a reply's tokens
    would land with a hole in them. The window fails at its delivery timeout instead, and neither
    the window queued behind it nor any later one is sent."""
    conversation_id = new_id()
    producer = WindowedProducer(60_000, client_id="test-windowed-gapless", delivery_timeout_s=3)
    await producer.start()
    send = producer.sender(topic, conversation_id)
    kafka = server_pid("kafka")
    try:
        first = send(b"before the freeze")
        producer.hurry()
        await asyncio.wait_for(first, 20)
        os.killpg(kafka, signal.SIGSTOP)
        try:
            in_flight = send(b"in flight at the freeze")
            producer.hurry()  # nothing unacknowledged: it goes now, into the frozen broker
            queued = send(b"queued behind it")
            producer.hurry()  # goes once the window in flight is settled
            with pytest.raises(DeliveryTimedOut):
                await asyncio.wait_for(in_flight, 20)
            with pytest.raises(EarlierWindowFailed):
                await asyncio.wait_for(queued, 20)
        finally:
            os.killpg(kafka, signal.SIGCONT)
        later = send(b"after the broker is back")
        producer.hurry()
        with pytest.raises(EarlierWindowFailed):
            await asyncio.wait_for(later, 20)
    finally:
        await producer.stop()

    partition = partition_for(conversation_id, topic)
    landed = [m.value() for m in logged(topic, partition) if m.key() == conversation_id.encode()]
    assert landed in ([b"before the freeze"], [b"before the freeze", b"in flight at the freeze"])
