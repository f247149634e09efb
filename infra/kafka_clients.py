"""Kafka clients configured the way steno's rules require, shared by every component.

Rule 1: every producer is idempotent with acks=all. Rule 2: consumers commit by hand, after
the effect. Partitions are chosen by `schemas.topics.partition_for`, never by the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from infra.settings import settings
from schemas.events import DeadLetter, Event
from schemas.serde import encode
from schemas.topics import Topic, partition_for

# librdkafka retries a send for 5 minutes by default; a user waiting on a POST must hear much
# sooner that the log is unreachable (the API then answers 503).
DELIVERY_TIMEOUT_S = 30.0
ADMIN_TIMEOUT_S = 5.0  # a group lookup by a status check or a watchdog: Kafka answers one in milliseconds
COOPERATIVE = {"partition.assignment.strategy": "cooperative-sticky"}
"""Opt-in for consumers whose rebalance callbacks only observe (or call incremental_assign/
unassign): a rebalance then moves only the partitions that change owner, and every other member
keeps consuming. A callback that calls `assign()` cannot use it (librdkafka refuses)."""


def consumer(group_id: str, **overrides: Any) -> Consumer:
    """A consumer that never commits on its own: callers commit after their effect (rule 2).

    Failover: a member that stops heartbeating (killed, frozen) is dropped after
    `consumer_session_timeout_ms`, the broker's minimum of 6 s, and the others hear of the
    rebalance within a heartbeat (1 s), so its partitions move in ~7 s instead of the 45 s default.
    No static membership (`group.instance.id`): it would let a killed member that restarts
    within the session timeout keep its partitions without a rebalance, but a member that is gone
    for good would then hold them for the whole session timeout, a static member's clean close
    leaves them assigned too (it sends no LeaveGroup), and every instance would need a stable,
    unique id from its supervisor. Without it, SIGTERM leaves the group and the partitions move
    at once, and a crash costs the same ~7 s however the member comes back.
    """
    return Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": group_id,
            "session.timeout.ms": settings.kafka.consumer_session_timeout_ms,
            "heartbeat.interval.ms": settings.kafka.consumer_heartbeat_ms,
            "client.id": client_id(group_id),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            **overrides,
        }
    )


def stable_member(group_id: str, pid: int) -> bool:
    """Whether process `pid` is a member of the consumer group and the group is stable, as the
    group's coordinator sees it (raises when Kafka does not answer within 5 s)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap, "log_level": 0})
    return _own_partitions(admin, group_id, pid) is not None


@dataclass(frozen=True)
class Standing:
    """A process's place in its consumer group, as the group's coordinator sees it."""

    member: bool  # of the group, and the group stable
    behind: dict[tuple[str, int], int]
    """Its partitions that hold records past the group's committed offset: (topic, partition) to
    that offset. Empty when it is no member."""


def standing(admin: AdminClient, group_id: str, pid: int) -> Standing:
    """Process `pid`'s standing in the group (raises when Kafka does not answer within 5 s each ask)."""
    partitions = _own_partitions(admin, group_id, pid)
    if not partitions:
        return Standing(member=partitions is not None, behind={})
    committed = committed_offsets(admin, group_id, partitions)
    latest = admin.list_offsets(dict.fromkeys(committed, OffsetSpec.latest()), request_timeout=ADMIN_TIMEOUT_S)
    ends = {tp: f.result(timeout=ADMIN_TIMEOUT_S).offset for tp, f in latest.items()}
    # A partition with no committed offset (negative) is behind by whatever it holds.
    behind = {(tp.topic, tp.partition): offset for tp, offset in committed.items() if ends[tp] > max(offset, 0)}
    return Standing(member=True, behind=behind)


def committed_offsets(admin: AdminClient, group_id: str, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The group's committed offset of each partition, negative where it has none (raises when
    Kafka does not answer within 5 s, or answers with an error: a coordinator still loading too)."""
    wanted = [ConsumerGroupTopicPartitions(group_id, partitions)]
    [offsets] = [f.result(timeout=ADMIN_TIMEOUT_S) for f in admin.list_consumer_group_offsets(wanted).values()]
    return {TopicPartition(tp.topic, tp.partition): tp.offset for tp in offsets.topic_partitions}


def _own_partitions(admin: AdminClient, group_id: str, pid: int) -> list[TopicPartition] | None:
    """The partitions the group assigned process `pid`; None unless it is a member of a stable group."""
    futures = admin.describe_consumer_groups([group_id], request_timeout=ADMIN_TIMEOUT_S).values()
    [description] = [f.result(timeout=ADMIN_TIMEOUT_S) for f in futures]
    if description.state != ConsumerGroupState.STABLE:
        return None
    mine = [m for m in description.members if m.client_id == client_id(group_id, pid)]
    return [tp for member in mine for tp in member.assignment.topic_partitions] if mine else None


def client_id(group_id: str, pid: int | None = None) -> str:
    """The client id of a process's consumer in a group: the PID in it lets `steno status` tell
    whether that very process is a member, not just whether the group has members."""
    return f"{group_id}-{pid if pid is not None else os.getpid()}"


def producer_config(**overrides: Any) -> dict[str, Any]:
    """Every steno producer's librdkafka settings: idempotent, acknowledged by every in-sync
    replica (rule 1), sent at once (`settings.kafka.producer_linger_ms`)."""
    return {
        "bootstrap.servers": settings.kafka.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.kafka.producer_linger_ms,
        "compression.type": "lz4",
        "delivery.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000),
        **overrides,
    }


class EventProducer:
    """An idempotent producer whose sends resolve asyncio futures when Kafka acknowledges them.

    A background thread serves delivery callbacks, so callers on the event loop never block on
    librdkafka. `linger.ms` is small (`settings.kafka.producer_linger_ms`): events are batched by
    librdkafka while it waits for the previous batch's ack, without holding any back noticeably.
    """

    def __init__(self, **overrides: Any) -> None:
        self._producer = Producer(producer_config(**overrides))
        self._settling = threading.Lock()  # between the delivery thread and the loop, for Delivery
        self._running = True
        self._poller = threading.Thread(target=self._poll_forever, name="kafka-delivery", daemon=True)
        self._poller.start()

    def send(self, topic: Topic, event: Event | DeadLetter, key: str | None = None) -> asyncio.Future[Message]:
        """Queue the event on its conversation's partition; the future resolves on the broker's ack."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        if key is None:
            if isinstance(event, DeadLetter):
                raise ValueError("a dead letter goes on its record's partition: pass that record's key")
            key = event.conversation_id
        self._producer.produce(
            topic.name,
            value=encode(event),
            key=key.encode(),
            partition=partition_for(key, topic),
            on_delivery=partial(_wake, loop, future),
        )
        return future

    def produce(self, topic: Topic, event: Event) -> Delivery:
        """Like `send`, for events sent in bulk (a reply's tokens), on their conversation's
        partition: the acknowledgement is a `Delivery`, which wakes the event loop only if
        something is waiting on it when it comes."""
        key = event.conversation_id
        return self._produce_encoded(topic.name, key.encode(), partition_for(key, topic), encode(event))

    def sender(self, topic: Topic, conversation_id: str) -> Callable[[bytes], Delivery]:
        """`produce` for events already encoded (`schemas.serde.TokenEncoder`), all of one
        conversation: its key and partition are worked out once, not for every token."""
        return partial(
            self._produce_encoded, topic.name, conversation_id.encode(), partition_for(conversation_id, topic)
        )

    def hurry(self) -> None:
        """Nothing to hurry: events wait no longer than librdkafka's `linger.ms`, kept short."""

    def _produce_encoded(self, topic: str, key: bytes, partition: int, value: bytes) -> Delivery:
        delivery = Delivery(self._settling)
        self._producer.produce(topic, value, key, partition, delivery.settle)
        return delivery

    def _poll_forever(self) -> None:
        while self._running:
            self._producer.poll(0.05)

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued, then stop the delivery thread."""
        self._producer.flush(timeout_s)
        self._running = False
        self._poller.join()


def _wake(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Message], err: KafkaError | None, msg: Message
) -> None:
    """The delivery callback (on the producer's poll thread): settle `future` on its loop.

    A loop closed since the send (a process shutting down, a test's loop ended) has nobody left
    to wake; raising here would end the delivery thread, and with it every later acknowledgement
    of every sender of the process."""
    with contextlib.suppress(RuntimeError):  # asyncio's "Event loop is closed"
        loop.call_soon_threadsafe(_settle, future, err, msg)


def _settle(future: asyncio.Future[Message], err: KafkaError | None, msg: Message) -> None:
    if future.done():
        return
    if err is not None:
        future.set_exception(KafkaException(err))
    else:
        future.set_result(msg)


class Delivery:
    """The broker's acknowledgement of one produced event, to await when it matters.

    An asyncio future per event costs a future, and a wake-up of the event loop from the
    delivery thread (`call_soon_threadsafe`: a write to the loop's self-pipe, a select, a
    callback) per acknowledgement: for token events, most of the bridge's CPU per token. A
    Delivery is settled on the delivery thread by setting two fields under a lock; the loop is
    woken only for a Delivery something already awaits. The bridge awaits a reply's deliveries
    once, at its end (rule 6), when nearly all of them have long been settled.
    """

    __slots__ = ("_error", "_lock", "_message", "_settled", "_waiter")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._settled = False
        self._error: KafkaError | None = None
        self._message: Message | None = None
        self._waiter: asyncio.Future[Message] | None = None

    def settle(self, err: KafkaError | None, msg: Message) -> None:
        """The delivery callback (on the producer's poll thread)."""
        with self._lock:
            self._settled, self._error, self._message = True, err, msg
            waiter = self._waiter
        if waiter is not None:
            _wake(waiter.get_loop(), waiter, err, msg)

    def __await__(self) -> Generator[Any, None, Message]:
        with self._lock:
            if not self._settled and self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            waiter = None if self._settled else self._waiter
        if waiter is not None:
            return (yield from waiter.__await__())
        if self._error is not None:
            raise KafkaException(self._error)
        assert self._message is not None  # settled without an error: the delivered message
        return self._message


@dataclass(frozen=True)
class Record:
    """A consumed record and where in the log it was, whichever client consumed it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @classmethod
    def of(cls, msg: Message) -> Record:
        return cls(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg.key(), msg.value())


def dead_letter(record: Record, processor: str, reason: str) -> DeadLetter:
    """Rule 7: wrap an input a processor could not handle, so the partition can move on."""
    return DeadLetter(
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        processor=processor,
        reason=reason,
        payload=(record.value or b"").decode("utf-8", errors="replace"),
    )


def position(msg: Message) -> tuple[int, int]:
    """A consumed record's (partition, offset). The client types both as optional, for messages
    not yet produced; every record a consumer returns without an error has them."""
    partition, offset = msg.partition(), msg.offset()
    if partition is None or offset is None:
        raise ValueError(f"a record of {msg.topic()} without a log position: only consumed records have one")
    return partition, offset


def next_batch(consumer: Consumer, timeout_s: float, most: int = 1000) -> list[Message]:
    """Whatever has arrived, waiting only for the first record.

    `Consumer.consume(n, timeout)` alone waits out the whole timeout unless n records are
    there, which would add that timeout to the latency of every quiet-time event.
    """
    first = consumer.poll(timeout_s)
    return [] if first is None else [first, *consumer.consume(most - 1, 0)]
