"""A producer that sends a window's events to each broker in one produce request.

librdkafka puts one partition's batch in each produce request (its issue #1700, open), so a
lingering librdkafka producer sends up to one request per partition per linger window: with a
reply streaming on each of the token topic's six partitions, six requests every 16 ms, each one
work for the broker and a fetch response for every consumer of the topic (the API's token feed
above all). aiokafka's sender puts every partition's batch bound for a broker in one request;
handing it a whole window's events in one go, on the event loop, makes them drain together.
At a GPU's pace that took Kafka's CPU a token from ~115 to ~70 µs and the API's from ~100 to
~80 (the journal's thirtieth round).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator, Iterator
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata

from infra.kafka_clients import DELIVERY_TIMEOUT_S
from infra.settings import settings
from schemas.topics import Topic, partition_for


class DeliveryTimedOut(Exception):
    """Kafka did not acknowledge the events within the delivery timeout; they may still land."""


class EarlierWindowFailed(Exception):
    """The events were not sent: a window before them was not acknowledged, so they could land
    after a hole in the log."""


class Acknowledgement:
    """Kafka's acknowledgement of a window's events on one partition, shared by all of them.

    Awaiting it never cancels it: a generation cancelled while it waits (abandoned) must leave the
    acknowledgement for the bridge to wait on before the request's retry begins, as it must every
    other event's of the window (an awaited future is cancelled with its awaiting task).
    """

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[RecordMetadata]) -> None:
        self.future = future

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        if not self.future.done():
            yield from asyncio.shield(self.future).__await__()
        return self.future.result()


# A window's events, by topic and partition: (key, value, CreateTime in ms) each, and what their
# acknowledgement settles.
Window = dict[tuple[str, int], tuple[list[tuple[bytes, bytes, int]], Acknowledgement]]


class WindowedProducer:
    """An idempotent producer whose events wait out a window (`window_ms` from the first one
    queued), then go to aiokafka together.

    An event's awaitable resolves once Kafka acknowledged every event of its partition in its
    window (they are acknowledged in order, so it is the last one's). Windows are handed over one
    after another, each once the window before is settled, so a partition's events keep their
    order. aiokafka keeps one request in flight per broker anyway, so under load a window goes
    once the request before it is answered, and the events that came meanwhile gather in the next
    window. A window can be `hurry`'d: a reply that ended waits for its last tokens, and they go
    as soon as the pipe is idle instead of at the end of the linger.

    A window Kafka has not acknowledged within the delivery timeout of its closing fails
    (`DeliveryTimedOut`), as librdkafka's `delivery.timeout.ms` fails its events
    (`infra.kafka_clients`); aiokafka's idempotent producer would retry an unanswered request
    for as long as the broker is away. And no event is sent after one that failed: from then on
    every window fails at once (`EarlierWindowFailed`), as librdkafka's
    `enable.gapless.guarantee` makes its producer fail. Sent, they could land after a hole in a
    reply's tokens (a frozen broker once left one that way), which a client reading the log
    would be shown before the reply's retry replaced it. The bridge stops on the failure
    (`Bridge._check_crash`), and its restart retries each reply as a new attempt, with a new
    producer.
    """

    def __init__(self, window_ms: float, client_id: str, delivery_timeout_s: float = DELIVERY_TIMEOUT_S) -> None:
        self._window_s = window_ms / 1000
        self._delivery_timeout_s = delivery_timeout_s
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            compression_type="lz4",
            linger_ms=0,  # the window is the linger
            max_batch_size=1_000_000,  # librdkafka's batch.size
            request_timeout_ms=int(delivery_timeout_s * 1000),
        )
        self._window: Window = {}
        self._timer: asyncio.TimerHandle | None = None
        self._handing_over: asyncio.Task[None] | None = None  # the newest window's hand-over
        self._settling: asyncio.Future[list[Any]] | None = None  # the newest window's acknowledgements
        self._failed: BaseException | None = None  # why a window was not acknowledged: no more are sent
        self._unsettled = 0  # windows closed whose events Kafka has not all acknowledged yet
        self._hurried = False  # the open window goes as soon as no window is unsettled

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        """Send what is queued and wait for its acknowledgement, then disconnect."""
        self._close_window()
        if self._handing_over is not None:
            await asyncio.wait([self._handing_over])
        await self._producer.stop()

    def sender(self, topic: Topic, conversation_id: str) -> Callable[[bytes], Acknowledgement]:
        """Queue events already encoded, all of one conversation, on its partition of `topic`."""
        where = (topic.name, partition_for(conversation_id, topic))
        return partial(self._queue, where, conversation_id.encode())

    def hurry(self) -> None:
        """Send the open window as soon as every window before it is acknowledged, not after its
        linger: a reply that has ended waits for its last tokens before writing its final event.

        As in Nagle's algorithm, a window goes early only into an idle pipe. While a window is
        unacknowledged (under load they go back to back) the open one would wait behind it
        anyway, and closing it sooner would only split it into more requests: it goes when that
        window is acknowledged, or at the end of its linger if that comes first."""
        if self._window:
            self._hurried = True
            self._close_if_hurried()

    def _queue(self, where: tuple[str, int], key: bytes, value: bytes) -> Acknowledgement:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._window_s, self._close_window)
        queued = self._window.get(where)
        if queued is None:
            queued = self._window[where] = ([], Acknowledgement(asyncio.get_running_loop().create_future()))
        queued[0].append((key, value, time.time_ns() // 1_000_000))
        return queued[1]

    def _close_window(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._hurried = False
        if self._window:
            window, self._window = self._window, {}
            self._unsettled += 1
            acknowledgements = (acknowledged.future for _, acknowledged in window.values())
            settling = asyncio.gather(*acknowledgements, return_exceptions=True)
            settling.add_done_callback(self._window_settled)
            loop = asyncio.get_running_loop()
            expiry = loop.call_later(self._delivery_timeout_s, _expire, window, self._delivery_timeout_s)
            settling.add_done_callback(lambda _: expiry.cancel())
            self._handing_over = loop.create_task(self._hand_over(window, self._settling))
            self._settling = settling

    def _window_settled(self, settled: asyncio.Future[list[Any]]) -> None:
        self._unsettled -= 1
        failure = next((outcome for outcome in settled.result() if isinstance(outcome, BaseException)), None)
        self._failed = self._failed or failure
        self._close_if_hurried()

    def _close_if_hurried(self) -> None:
        if self._hurried and self._unsettled == 0:
            self._close_window()

    async def _hand_over(self, window: Window, before: asyncio.Future[list[Any]] | None) -> None:
        """Give aiokafka the window's events once the window before is settled, a batch per
        partition (one event's worth of Python each; `send` would be a coroutine and a future);
        none of them once a window was not acknowledged."""
        if before is not None:
            await asyncio.wait([before])  # settling it, `_window_settled` noted any failure first
        if self._failed is not None:
            _fail(window, EarlierWindowFailed(f"not sent: an earlier window was not acknowledged ({self._failed!r})"))
            return
        for (topic, partition), (events, acknowledged) in window.items():
            try:
                for batch in self._batches(events):
                    delivered = await self._producer.send_batch(batch, topic, partition=partition)
            except Exception as exc:  # aiokafka refused it (closed, say)
                _fail({(topic, partition): (events, acknowledged)}, exc)
            else:  # a partition's batches are acknowledged in order: the last one's is all of them
                delivered.add_done_callback(partial(_settle, acknowledged.future))

    def _batches(self, events: list[tuple[bytes, bytes, int]]) -> Iterator[BatchBuilder]:
        """The events in batches of up to `max_batch_size`; each is closed once yielded."""
        batch = self._producer.create_batch()
        for key, value, timestamp_ms in events:
            if batch.append(timestamp=timestamp_ms, key=key, value=value) is None:  # full
                yield batch
                batch = self._producer.create_batch()
                if batch.append(timestamp=timestamp_ms, key=key, value=value) is None:
                    raise ValueError(f"a {len(value)}-byte event is larger than a batch")
        batch.close()
        yield batch


def _expire(window: Window, timeout_s: float) -> None:
    """The window's delivery timeout: what Kafka has not acknowledged by now fails (aiokafka's
    idempotent producer would retry an unanswered request for as long as the broker is away)."""
    _fail(window, DeliveryTimedOut(f"not acknowledged within {timeout_s:g} s of its window closing"))


def _fail(window: Window, error: BaseException) -> None:
    for _, acknowledged in window.values():
        if not acknowledged.future.done():
            acknowledged.future.set_exception(error)


def _settle(acknowledged: asyncio.Future[RecordMetadata], delivered: asyncio.Future[RecordMetadata]) -> None:
    if acknowledged.done():  # failed at its delivery timeout: whatever Kafka says now comes too late
        if not delivered.cancelled():
            delivered.exception()  # looked at: it is moot
        return
    if delivered.cancelled():  # the producer stopped before Kafka answered
        acknowledged.cancel()
        return
    error = delivered.exception()
    if error is not None:
        acknowledged.set_exception(error)
    else:
        acknowledged.set_result(delivered.result())
