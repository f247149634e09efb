"""The control topic as every bridge instance must read it: all of it, outside any consumer group.

A cancel has to reach whichever instance runs the generation, and nobody knows which one that
is, so each instance reads every partition itself (assigned, not subscribed: no group, no
commits). It starts a little in the past rather than at the end, so cancels sent while it was
starting or restarting are still seen and can be applied to requests redelivered to it.
"""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import Consumer, Message, TopicPartition

from infra.kafka_clients import consumer
from infra.partition_reads import first_offsets_since
from schemas.events import GenerationCancelRequested
from schemas.serde import UndecodableEvent, decode
from schemas.topics import Topic

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT_S = 10.0


def control_consumer(topic: Topic, lookback_s: float) -> Consumer:
    """A consumer of every partition of the control topic, from `lookback_s` ago.

    librdkafka needs a group id even for assigned partitions; a unique one keeps instances from
    ever sharing state, and nothing is committed under it.
    """
    client = consumer(f"steno-bridge-control-{uuid.uuid4().hex}")
    client.assign(starting_positions(client, topic, since_ms=int((time.time() - lookback_s) * 1000)))
    return client


def starting_positions(client: Consumer, topic: Topic, since_ms: int) -> list[TopicPartition]:
    """Each partition's first message since `since_ms`; where there is none, the partition's end
    as it was before that lookup (a real offset: a logical "end" would skip whatever arrives
    before the first fetch).

    The ends are read first. A cancel produced between the two reads is then found by the
    timestamp lookup; in the other order it would fall below an end read after it, and a bridge
    starting as a user stops a reply would never see the cancel.
    """
    partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
    ends = {tp.partition: client.get_watermark_offsets(tp, timeout=LOOKUP_TIMEOUT_S)[1] for tp in partitions}
    wanted = [TopicPartition(topic.name, p, since_ms) for p in range(topic.partitions)]
    found = first_offsets_since(client, wanted, time.monotonic() + LOOKUP_TIMEOUT_S)
    return [tp if tp.offset >= 0 else TopicPartition(tp.topic, tp.partition, ends[tp.partition]) for tp in found]


def cancelled_response(message: Message) -> str | None:
    """The response id a control message cancels; None for anything else.

    An undecodable control message is logged, not dead-lettered: every instance reads every
    control message, so each would dead-letter it once more.
    """
    if message.error():
        log.warning("control topic: %s", message.error())
        return None
    try:
        event = decode(message.value())
    except UndecodableEvent as exc:
        log.warning("control topic: skipped %s[%d]@%d: %s", message.topic(), message.partition(), message.offset(), exc)
        return None
    return event.response_id if isinstance(event, GenerationCancelRequested) else None
