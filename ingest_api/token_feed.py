"""One Kafka consumer per API process that tails the token stream and fans it out (rule 4).

Each SSE client subscribes to one response and gets a bounded queue. A client too slow to
keep up is dropped from the live feed (its queue overflows; the shared consumer never waits
for it) and catches up from the feed's recent-event memory or from the log.

The feed also remembers the events of recent responses, so a client that connects late or
reconnects with `Last-Event-ID` is usually served from memory instead of a Kafka read.

A client can also watch a whole conversation: it is told of each response in progress in it
when it starts watching, then of each that begins (whoever sent the message, from whichever
tab), and follows that response's own stream.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TypeVar

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from infra import kafka_clients
from infra.backoff import doubling
from infra.kafka_clients import next_batch
from infra.settings import settings
from infra.wedged import exit_wedged
from ingest_api.positions import Kept, LoggedEvent, from_kept, logged
from schemas.events import id_created_ms
from schemas.serde import UndecodableEvent
from schemas.topics import TOKENS

log = logging.getLogger(__name__)

CLOCK_SKEW_MS = 5_000  # how far apart the clocks of API and bridge machines may be
REMEMBER_ENDED_S = 300.0  # how long a response's events stay in memory after its last one
ATTACH_TRY_S = 5.0  # how long one try at reading where the partitions end waits for Kafka
ATTACH_RETRY_FIRST_S, ATTACH_RETRY_MAX_S = 0.5, 5.0

V = TypeVar("V")


class Subscription:
    """One client's live view of one response (or, for a watcher, of one conversation's new
    responses): a bounded queue that closes on overflow.

    A deque and one waiter rather than an asyncio.Queue: the feed offers every token to it, and
    the reader takes whatever has arrived at once, so neither side pays the Queue's bookkeeping
    and wake-up per item."""

    def __init__(self, key: str, capacity: int) -> None:
        self.key = key  # the response id; a watcher's conversation id
        self._queued: deque[LoggedEvent] = deque()
        self._capacity = capacity
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False  # no more live events: overflowed, or the process is shutting down

    def offer(self, item: LoggedEvent) -> None:
        if self.overflowed:
            return
        if len(self._queued) >= self._capacity:
            self.end()  # wakes the reader, which then catches up from the log
            return
        self._queued.append(item)
        self._wake()

    def end(self) -> None:
        """No more live events: the reader finishes what is queued, then its iteration ends."""
        if not self.overflowed:
            self.overflowed = True
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def __aiter__(self) -> AsyncIterator[LoggedEvent]:
        """One event at a time; what is not taken stays queued for the next iteration."""
        while True:
            if self._queued:
                yield self._queued.popleft()
            elif self.overflowed:
                return
            else:
                await self._arrival()

    async def batches(self) -> AsyncIterator[list[LoggedEvent]]:
        """What is queued, all of it at once (waiting only for the first): the feed hands over a
        poll's worth of events in one go, and a reader that writes them as one chunk pays one
        socket write for the lot instead of one per token."""
        while True:
            if self._queued:
                batch = list(self._queued)
                self._queued.clear()
                yield batch
            elif self.overflowed:
                return
            else:
                await self._arrival()

    async def _arrival(self) -> None:
        """Wait until an event is offered or the subscription ends."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


@dataclass
class _Remembered:
    """What the feed saw of one response. `whole` is False when the feed attached after the
    response began (a restarted API): those events are a tail, and readers go to the log."""

    whole: bool
    conversation_id: str
    events: list[Kept] = field(default_factory=list)  # untracked by the GC: see LoggedEvent.kept
    ended: bool = False
    last_at: float = 0.0  # monotonic time of the newest event


class TokenFeed:
    def __init__(self, subscriber_queue: int) -> None:
        self._subscriber_queue = subscriber_queue
        self._subscribers: dict[str, set[Subscription]] = {}
        self._watchers: dict[str, set[Subscription]] = {}
        self._remembered: OrderedDict[str, _Remembered] = OrderedDict()  # the quietest first
        self._last_ended: dict[str, str] = {}  # conversation id -> its remembered response that ended last
        self._in_progress: dict[str, set[str]] = {}  # conversation id -> its remembered responses not ended
        self._started_ms = math.inf  # until the feed's start offsets are fixed, nothing counts as new
        self._ready = asyncio.Event()  # set once streams may begin: see `ready`
        self._running = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.healthy = False
        self.closing = False

    def start(self) -> None:
        """Begin tailing from the end of every partition; earlier events are in the log."""
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._thread = threading.Thread(target=self._consume_forever, name="token-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=5)

    async def ready(self) -> None:
        """Wait until streams may begin: the feed has fixed the offsets it tails from, or the
        process is shutting down (every subscription then ends at once).

        A stream stitches the log's backlog to the live events, which hold only what lies past
        those offsets. A client that came while they were being read (an API just started, its
        clients reconnecting) would have its backlog read first, and the events written between
        that read and the feed's start would be in neither: a gap in its reply."""
        await self._ready.wait()

    def close_streams(self) -> None:
        """The process is shutting down: end every client's stream now, cleanly, so each client
        reconnects (to another instance, or to this one restarted) with its last SSE id, instead
        of holding the process until its shutdown timeout cuts the connection mid-chunk."""
        self.closing = True
        self._ready.set()
        for followers in [*self._subscribers.values(), *self._watchers.values()]:
            for subscription in followers:
                subscription.end()

    def close_streams_soon(self) -> None:
        """`close_streams` from a signal handler or another thread, run on the feed's event loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.close_streams)

    def subscribe(self, response_id: str) -> Subscription:
        subscription = Subscription(response_id, self._subscriber_queue)
        self._subscribers.setdefault(response_id, set()).add(subscription)
        if self.closing:
            subscription.end()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        _discard(self._subscribers, subscription.key, subscription)

    def watch(self, conversation_id: str) -> Subscription:
        """Be offered the first event this process saw of each response in progress in the
        conversation, then of each new one: a reply that began just before the watcher came is
        announced too (the client read the history before or after it began, it cannot tell)."""
        watcher = Subscription(conversation_id, self._subscriber_queue)
        self._watchers.setdefault(conversation_id, set()).add(watcher)
        for response_id in self._in_progress.get(conversation_id, ()):
            watcher.offer(from_kept(self._remembered[response_id].events[0]))
        if self.closing:
            watcher.end()
        return watcher

    def unwatch(self, watcher: Subscription) -> None:
        _discard(self._watchers, watcher.key, watcher)

    def has_ended(self, response_id: str) -> bool:
        """True when this process saw the response end (False may still mean it ended long ago)."""
        entry = self._remembered.get(response_id)
        return entry is not None and entry.ended

    def last_ended(self, conversation_id: str) -> str | None:
        """The conversation's response this process saw end last (while it remembers it)."""
        return self._last_ended.get(conversation_id)

    def remembered(self, response_id: str) -> list[LoggedEvent] | None:
        """The response's events if memory holds all of them, else None (read the log)."""
        if (entry := self._remembered.get(response_id)) is not None:
            return [from_kept(kept) for kept in entry.events] if entry.whole else None
        created = id_created_ms(response_id) or 0
        is_recent = created > (time.time() - REMEMBER_ENDED_S) * 1000
        return [] if self._is_new(response_id) and is_recent else None

    def _is_new(self, response_id: str) -> bool:
        """Minted after the feed attached: every event of the response comes through the feed."""
        return (id_created_ms(response_id) or 0) > self._started_ms + CLOCK_SKEW_MS

    def _consume_forever(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka.bootstrap,
                "group.id": "steno-api-feed",  # required by librdkafka; partitions are assigned, never committed
                "enable.auto.commit": False,
                "fetch.min.bytes": settings.api.feed_fetch_min_bytes,
                "fetch.wait.max.ms": settings.api.feed_fetch_wait_ms,
            }
        )
        try:
            if not self._attach_when_kafka_answers(consumer):
                return  # stopped first
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._ready.set)  # before any batch is dispatched
            while self._running:
                batch = next_batch(consumer, timeout_s=0.1)
                self.healthy = True
                events = [item for msg in batch if not msg.error() and (item := _decoded(msg)) is not None]
                if events and self._loop is not None:
                    self._loop.call_soon_threadsafe(self._dispatch, events)
        except Exception:
            self.healthy = False
            log.exception("token feed consumer failed")
            exit_wedged("the token feed has stopped: no stream this process serves would get another token")
        finally:
            consumer.close()

    def _attach_when_kafka_answers(self, consumer: Consumer) -> bool:
        """`_attach`, tried again until Kafka answers (an API started while a broker restarts):
        a feed that gave up would leave the process unready, and its streams waiting, for good.
        False when the feed was stopped first."""
        waits = doubling(ATTACH_RETRY_FIRST_S, ATTACH_RETRY_MAX_S)
        while self._running:
            try:
                self._attach(consumer)
                return True
            except KafkaException as exc:
                wait = next(waits)
                log.warning("token feed cannot read where the token stream ends (%s); again in %.1fs", exc, wait)
                time.sleep(wait)
        return False

    def _attach(self, consumer: Consumer) -> None:
        """Assign every partition at its current end, read as explicit offsets, and only then
        count responses minted from now on as new: their events are all at or past these ends.
        (OFFSET_END would be resolved later, when the first fetch happens, leaving a window in
        which a new response's first events fall before the feed's position.)"""
        ends = [
            consumer.get_watermark_offsets(TopicPartition(TOKENS.name, p), timeout=ATTACH_TRY_S)[1]
            for p in _partitions()
        ]
        consumer.assign([TopicPartition(TOKENS.name, p, end) for p, end in zip(_partitions(), ends, strict=True)])
        self._started_ms = time.time() * 1000  # after the ends were read: later events lie past them

    def _dispatch(self, events: list[LoggedEvent]) -> None:
        now = time.monotonic()
        for item in events:
            response_id = item.response_id
            entry = self._remembered.get(response_id)
            if entry is None:
                whole = self._is_new(response_id) or item.begins
                entry = self._remembered[response_id] = _Remembered(whole, item.conversation_id)
                self._in_progress.setdefault(item.conversation_id, set()).add(response_id)
                for watcher in self._watchers.get(item.conversation_id, ()):
                    watcher.offer(item)
            else:
                self._remembered.move_to_end(response_id)  # kept in order of last activity
            entry.events.append(item.kept())
            entry.last_at = now
            if item.ends:
                entry.ended = True
                self._last_ended[item.conversation_id] = response_id
                _discard(self._in_progress, item.conversation_id, response_id)
            for subscription in self._subscribers.get(response_id, ()):
                subscription.offer(item)
        self._forget_old(now)

    def _forget_old(self, now: float) -> None:
        """Drop responses quiet for REMEMBER_ENDED_S, ended or abandoned (their bridge gone);
        later readers find them in the log. The memory is in order of last activity, so only
        the stale ones at its front are looked at."""
        cutoff = now - REMEMBER_ENDED_S
        while self._remembered:
            response_id, oldest = next(iter(self._remembered.items()))
            if oldest.last_at >= cutoff:
                return
            del self._remembered[response_id]
            _discard(self._in_progress, oldest.conversation_id, response_id)
            if self._last_ended.get(oldest.conversation_id) == response_id:
                del self._last_ended[oldest.conversation_id]


def _partitions() -> range:
    return range(TOKENS.partitions)


def _discard(index: dict[str, set[V]], key: str, value: V) -> None:
    """Remove `value` from the set at `key`, and the set once it is empty."""
    values = index.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del index[key]


def _decoded(msg: Message) -> LoggedEvent | None:
    _, offset = kafka_clients.position(msg)
    try:
        return logged(offset, msg.value())
    except UndecodableEvent as exc:
        log.warning("skipping undecodable token-stream record at %s: %s", offset, exc)
        return None
