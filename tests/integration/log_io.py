"""Write to and read back scratch topics, as the consumer-group tests need: events in, poison
pills in, everything a topic holds out, and whether a group has committed up to the end."""

from __future__ import annotations

import asyncio
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from infra import kafka_clients
from infra.kafka_clients import EventProducer, Record
from infra.settings import settings
from schemas.events import AnyEvent, Event, new_id
from schemas.serde import decode
from schemas.topics import Topic, partition_for


async def produce(topic: Topic, events: list[Event]) -> list[Message]:
    """Send the events in order, each on its conversation's partition; returns them as delivered."""
    producer = EventProducer()
    try:
        return await asyncio.gather(*(producer.send(topic, event) for event in events))
    finally:
        producer.close()


def produce_raw(topic: Topic, conversation_id: str, value: bytes) -> Message:
    """Bytes that are no steno event, on the conversation's partition."""
    delivered: list[Message] = []
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap, "enable.idempotence": True})
    producer.produce(
        topic.name,
        value=value,
        key=conversation_id.encode(),
        partition=partition_for(conversation_id, topic),
        on_delivery=lambda _err, msg: delivered.append(msg),
    )
    producer.flush(10)
    [message] = delivered
    return message


def read_all(topic: Topic, timeout_s: float = 30.0) -> list[AnyEvent]:
    """Everything the topic holds now, partition by partition."""
    consumer = kafka_clients.consumer(f"test-read-{new_id()}")  # only assign(): joins no group
    deadline = time.monotonic() + timeout_s
    try:
        found: list[AnyEvent] = []
        for partition in range(topic.partitions):
            _, end = consumer.get_watermark_offsets(TopicPartition(topic.name, partition), timeout=10)
            consumer.assign([TopicPartition(topic.name, partition, OFFSET_BEGINNING)])
            position = 0
            while position < end:
                assert time.monotonic() < deadline, f"{topic.name}[{partition}] not read to {end} in {timeout_s}s"
                for record in map(Record.of, kafka_clients.next_batch(consumer, timeout_s=1)):
                    found.append(decode(record.value))
                    position = record.offset + 1
        return found
    finally:
        consumer.close()


def values(consumer: Consumer, count: int, timeout_s: float) -> list[bytes]:
    """Exactly `count` record values from a subscribed consumer, or fail after the timeout;
    blocking, so an async test runs it off the event loop."""
    found: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < count:
        assert time.monotonic() < deadline, f"got {len(found)} of {count} values: {found}"
        message = consumer.poll(0.5)
        if message is None:
            continue
        assert message.error() is None, message.error()
        value = message.value()
        assert value is not None, f"a record without a value at offset {message.offset()}"
        found.append(value)
    return found


def committed_to_end(group: str, topics: list[Topic]) -> bool:
    """The group has committed every partition of `topics` up to its current end."""
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": group})
    try:
        partitions = [TopicPartition(t.name, p) for t in topics for p in range(t.partitions)]
        committed = {(c.topic, c.partition): c.offset for c in consumer.committed(partitions, timeout=10)}
        ends = {(p.topic, p.partition): consumer.get_watermark_offsets(p, timeout=10)[1] for p in partitions}
        return all(end == 0 or committed[where] == end for where, end in ends.items())
    finally:
        consumer.close()
