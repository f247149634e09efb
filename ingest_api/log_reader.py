"""Read one response's events back from the token stream, for late joiners and resumes.

A response's events all live in its conversation's partition and were all written after its
id was minted, so the read starts at the offset for that time and stops at the response's end
or the partition's current end. It always reads the whole response (a few hundred events at
most), so a client resuming after the end learns that it has everything.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition

from infra import kafka_clients
from infra.kafka_clients import next_batch
from infra.settings import settings
from ingest_api.positions import LoggedEvent, logged
from ingest_api.token_feed import CLOCK_SKEW_MS
from schemas.events import id_created_ms
from schemas.serde import UndecodableEvent
from schemas.topics import TOKENS, partition_for

READ_TIMEOUT_S = 10.0


class LogReadIncomplete(RuntimeError):
    """The log could not be read up to its end in time: what was read is not the whole response."""


def read_response(conversation_id: str, response_id: str) -> list[LoggedEvent]:
    """Blocking: the response's events that the log holds right now."""
    partition = partition_for(conversation_id, TOKENS)
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": "steno-api-reader", "enable.auto.commit": False}
    )
    try:
        start = _start_offset(consumer, partition, response_id)
        _, end = consumer.get_watermark_offsets(TopicPartition(TOKENS.name, partition), timeout=5)
        return _read(consumer, TopicPartition(TOKENS.name, partition, start), end, response_id)
    finally:
        consumer.close()


def _start_offset(consumer: Consumer, partition: int, response_id: str) -> int:
    since = TopicPartition(TOKENS.name, partition, (id_created_ms(response_id) or 0) - CLOCK_SKEW_MS)
    [found] = consumer.offsets_for_times([since], timeout=5)
    return found.offset if found.offset >= 0 else _end_offset(consumer, partition)


def _end_offset(consumer: Consumer, partition: int) -> int:
    return consumer.get_watermark_offsets(TopicPartition(TOKENS.name, partition), timeout=5)[1]


def _read(consumer: Consumer, start: TopicPartition, end: int, response_id: str) -> list[LoggedEvent]:
    found: list[LoggedEvent] = []
    if start.offset >= end:
        return found
    consumer.assign([start])
    position = start.offset
    deadline = time.monotonic() + READ_TIMEOUT_S
    while position < end and time.monotonic() < deadline:
        for msg in next_batch(consumer, timeout_s=1.0):
            if msg.error():
                continue
            _, offset = kafka_clients.position(msg)
            position = offset + 1
            try:
                item = logged(offset, msg.value(), response_id)  # other responses' tokens: not decoded
            except UndecodableEvent:
                continue
            if item is not None:
                found.append(item)
                if item.ends:
                    return found
    if position < end:
        raise LogReadIncomplete(f"read up to offset {position} of {end} in {READ_TIMEOUT_S:.0f}s")
    return found
