"""Read back what the log holds for one conversation, to check the events a flow wrote."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from infra.kafka_clients import next_batch, position
from infra.settings import settings
from schemas.events import id_created_ms
from schemas.serde import UndecodableEvent, decode
from schemas.topics import Topic, partition_for


def events_of(topic: Topic, conversation_id: str) -> list:
    """Every decodable event of the conversation on the topic, in log order."""
    partition = partition_for(conversation_id, topic)
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": "steno-tests", "enable.auto.commit": False}
    )
    try:
        since = TopicPartition(topic.name, partition, (id_created_ms(conversation_id) or 0) - 5_000)
        [start] = consumer.offsets_for_times([since], timeout=10)
        _, end = consumer.get_watermark_offsets(TopicPartition(topic.name, partition), timeout=10)
        if start.offset < 0:
            return []
        consumer.assign([TopicPartition(topic.name, partition, start.offset)])
        found, reached = [], start.offset
        while reached < end:
            for msg in next_batch(consumer, timeout_s=5):
                reached = position(msg)[1] + 1
                try:
                    event = decode(msg.value())
                except UndecodableEvent:
                    continue
                if getattr(event, "conversation_id", None) == conversation_id:
                    found.append(event)
        return found
    finally:
        consumer.close()
