"""Run the stream processors on scratch topics, feed the views from them, and watch what they write.

Shared by the processors' integration tests and their benchmark. Scratch copies of steno's
topics (same partition counts) and a scratch Redis namespace keep the stack's own processes and
these runs out of each other's way.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

import faust
from confluent_kafka import Consumer, TopicPartition

from infra.kafka_clients import next_batch
from infra.settings import settings
from projections import active_context, history
from projections.active_context import ActiveContext
from projections.history import History
from projections.projector import Projector
from schemas.serde import UndecodableEvent, decode
from schemas.topics import Topic
from stream_processors.app import Topics
from tests.integration.scratch import scratch_copies


def each(topics: Topics) -> list[Topic]:
    return [getattr(topics, field.name) for field in fields(topics)]


@contextmanager
def scratch_topics(run: str) -> Iterator[Topics]:
    """Fresh copies of the app's topics, deleted afterwards."""
    with scratch_copies(run, each(Topics())) as copies:
        yield Topics(*copies)


def consumer_from_start(topics: list[Topic]) -> Consumer:
    """A consumer of every partition from offset 0 that commits nothing."""
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": "steno-tests", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(t.name, p, 0) for t in topics for p in range(t.partitions)])
    return consumer


async def project(conversations: Topic, namespace: str, stop: asyncio.Event) -> None:
    """The projections' own batch step over the scratch log, until `stop` (the live runner
    reads only the real topic). Undecodable records are skipped."""
    session, client = history.connect(), active_context.connect()
    context = ActiveContext(client, settings.context, namespace=namespace, claims_namespace=namespace)
    projector = Projector(History(session), context)
    consumer = consumer_from_start([conversations])
    try:
        while not stop.is_set():
            await projector.apply(await asyncio.to_thread(next_batch, consumer, 0.1))
    finally:
        consumer.close()
        await client.aclose()
        session.cluster.shutdown()


@dataclass(frozen=True)
class Logged:
    topic: str
    timestamp_ms: int  # the record's CreateTime: when its producer produced it
    event: object  # the decoded event, or the raw bytes of an undecodable record
    offset: int


Predicate = Callable[[list[Logged]], bool]


class LogTail:
    """Every record of some topics, read by a background thread; callers wait for what they expect."""

    def __init__(self, topics: list[Topic]) -> None:
        self._consumer = consumer_from_start(topics)
        self._seen: list[Logged] = []
        self._changed = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while self._running:
            for record in next_batch(self._consumer, 0.1):
                try:
                    event: object = decode(record.value())
                except UndecodableEvent:
                    event = record.value()
                with self._changed:
                    self._seen.append(Logged(record.topic() or "", record.timestamp()[1], event, record.offset() or 0))
                    self._changed.notify_all()

    async def wait_for(self, predicate: Predicate, timeout_s: float = 60.0) -> list[Logged]:
        """What was seen once `predicate` holds for it; AssertionError after the timeout."""

        def wait() -> list[Logged]:
            with self._changed:
                assert self._changed.wait_for(lambda: predicate(self._seen), timeout_s), (
                    f"not seen in {timeout_s}s among {len(self._seen)} records; the last: {self._seen[-3:]}"
                )
                return list(self._seen)

        return await asyncio.to_thread(wait)

    async def of(self, response_id: str, *types: type, count: int = 1) -> list[Logged]:
        """The first `count` records of these event types for the response, once there are as many."""

        def matching(seen: list[Logged]) -> list[Logged]:
            return [
                r for r in seen if isinstance(r.event, types) and getattr(r.event, "response_id", None) == response_id
            ]

        return matching(await self.wait_for(lambda seen: len(matching(seen)) >= count))[:count]

    def seen(self) -> list[Logged]:
        with self._changed:
            return list(self._seen)

    def close(self) -> None:
        self._running = False
        self._thread.join()
        self._consumer.close()


async def crash_reason(app: faust.App, timeout_s: float = 60.0) -> BaseException:
    """Why the app crashed, once it has; AssertionError if it has not within the timeout."""
    deadline = time.monotonic() + timeout_s
    while not app.crashed:
        assert time.monotonic() < deadline, f"the app did not stop within {timeout_s}s"
        await asyncio.sleep(0.05)
    assert app.crash_reason is not None
    return app.crash_reason
