"""The floor under each hop of a message's way to its first token, measured in the same run.

A hop's time in `benchmarks.hops` is the round trips it is made of plus steno's own work around
them. The round trips alone, timed here against the running stack with nothing of steno's
around them, say how much of each hop is this machine's servers and how much is steno's, so
what is left to cut. Each is timed one at a time with a pause between, as a message that
arrives alone meets them (`COUNT` of each, after `WARM_UP` not counted; p50):

- Kafka, produce to consume: a record produced with steno's producer settings, read by a
  consumer with steno's consumer settings, on a scratch topic deleted afterwards;
- Kafka's acknowledgement of a produce;
- a Redis round trip (PING), through the client steno uses;
- an HTTP round trip to the API's `/healthz`, which does no work, through the benchmarks' client.

`PATH` says which round trips each hop cannot do without. The hops between two events are
timed from the events' Kafka timestamps, which have whole milliseconds, so a hop's mean is
unbiased; the first hop (the send to its event's timestamp) reads ~0.5 ms short on average and
the last (an event's timestamp to the client's first token) ~0.5 ms long.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from infra.kafka_clients import consumer, producer_config
from infra.settings import settings
from projections import active_context
from schemas.events import new_id
from schemas.topics import Topic
from tests.integration.scratch import scratch_copies

COUNT = 200
WARM_UP = 20  # connections, the JVM's and the clients' first calls: not a message's hop
PAUSE_S = 0.005  # between two round trips: each meets idle servers, as a lone message does
WAIT_S = 10.0  # for one record or acknowledgement, before the measurement gives up
SEND = "the send"  # a path's start: the client sending the message (time 0 of a timeline)


@dataclass(frozen=True)
class Floors:
    """p50 of each round trip, in ms."""

    kafka_hop_ms: float  # produce to consume
    kafka_ack_ms: float
    redis_ms: float
    http_ms: float


@dataclass(frozen=True)
class Hop:
    start: str  # an event type of `benchmarks.hops`' timelines, or SEND
    end: str
    floor: Callable[[Floors], float] | None  # None: not steno's (the model's first token)
    made_of: str


PATH = [
    Hop(SEND, "MessageSubmitted", lambda f: f.http_ms / 2, "half an HTTP round trip"),
    Hop("MessageSubmitted", "MessageAccepted", lambda f: f.kafka_hop_ms, "Kafka produce to consume"),
    Hop(
        "MessageAccepted",
        "InferenceRequested",
        lambda f: max(f.kafka_ack_ms, f.redis_ms),
        "Kafka's ack of MessageAccepted, the context's Redis read beside it",
    ),
    Hop(
        "InferenceRequested",
        "ResponseStarted",
        lambda f: f.kafka_hop_ms + f.redis_ms,
        "Kafka produce to consume, then the attempt numbered in Redis",
    ),
    Hop("ResponseStarted", "TokenGenerated", None, "the model's first token (Triton's, not steno's)"),
    Hop(
        "TokenGenerated",
        "client: first token",
        lambda f: f.kafka_hop_ms + f.http_ms / 2,
        "Kafka produce to consume, half an HTTP round trip",
    ),
]


@dataclass(frozen=True)
class Row:
    hop: Hop
    steno_ms: float  # the hop's mean over the exchanges that have both its ends
    floor_ms: float | None
    exchanges: int


def path_rows(lines: Sequence[Mapping[str, float]], floors: Floors, path: Sequence[Hop] = PATH) -> list[Row]:
    """Each hop's time in the timelines (ms from the send, per event type) beside its floor;
    a hop no exchange has both ends of is left out."""
    rows = []
    for hop in path:
        times = [line[hop.end] - line.get(hop.start, 0.0) for line in lines if _has(line, hop.start, hop.end)]
        if times:
            floor = hop.floor(floors) if hop.floor is not None else None
            rows.append(Row(hop, statistics.fmean(times), floor, len(times)))
    return rows


def _has(line: Mapping[str, float], start: str, end: str) -> bool:
    return end in line and (start == SEND or start in line)


def steno_and_floor(rows: Sequence[Row]) -> tuple[float, float]:
    """The hops with a floor (steno's, not the model's), summed: their time and their floor."""
    floored = [(row.steno_ms, row.floor_ms) for row in rows if row.floor_ms is not None]
    return sum(steno for steno, _ in floored), sum(floor for _, floor in floored)


def path_table(rows: Sequence[Row], floors: Floors) -> str:
    lines = [
        f"Floors, p50 of {COUNT} each: Kafka produce to consume {floors.kafka_hop_ms:.2f} ms, Kafka ack "
        f"{floors.kafka_ack_ms:.2f}, Redis round trip {floors.redis_ms:.2f}, HTTP round trip {floors.http_ms:.2f}",
        "| hop | steno, mean (ms) | floor (ms) | above the floor (ms) | the floor is | n |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        floor = "" if row.floor_ms is None else f"{row.floor_ms:.1f}"
        above = "" if row.floor_ms is None else f"{row.steno_ms - row.floor_ms:.1f}"
        hop = f"{row.hop.start} → {row.hop.end}"
        lines.append(f"| {hop} | {row.steno_ms:.1f} | {floor} | {above} | {row.hop.made_of} | {row.exchanges} |")
    steno, floored = steno_and_floor(rows)
    lines.append(f"| **steno's hops** | **{steno:.1f}** | **{floored:.1f}** | **{steno - floored:.1f}** | | |")
    return "\n".join(lines)


async def measure(count: int = COUNT) -> Floors:
    """Every floor, one after another (each alone on the machine)."""
    hop_ms, ack_ms = await asyncio.to_thread(_kafka, count)
    return Floors(
        kafka_hop_ms=statistics.median(hop_ms),
        kafka_ack_ms=statistics.median(ack_ms),
        redis_ms=statistics.median(await _redis(count)),
        http_ms=statistics.median(await _http(count)),
    )


def _kafka(count: int) -> tuple[list[float], list[float]]:
    """(produce to consume, acknowledgement) times in ms, on a scratch topic of one partition."""
    with scratch_copies("bench-floors", [Topic("floors", partitions=1, retention_ms=3_600_000)]) as [topic]:
        producer = Producer(producer_config())
        reader = consumer(f"steno-bench-floors-{new_id()}")  # assigned, not subscribed: never joins its group
        reader.assign([TopicPartition(topic.name, 0, 0)])
        try:
            hops = [_produce_to_consume(producer, reader, topic.name) for _ in range(WARM_UP + count)]
            acks = [_acknowledged(producer, topic.name) for _ in range(WARM_UP + count)]
        finally:
            reader.close()
            producer.flush(WAIT_S)
    return hops[WARM_UP:], acks[WARM_UP:]


def _produce_to_consume(producer: Producer, reader: Consumer, topic: str) -> float:
    began = time.perf_counter()
    producer.produce(topic, b"floor")
    producer.poll(0)
    while (record := reader.poll(WAIT_S)) is None or record.error():
        if record is None:
            raise TimeoutError(f"a record produced to {topic} was not consumed within {WAIT_S:g} s")
    took = _ms_since(began)
    producer.flush(WAIT_S)  # its acknowledgement, before the next
    time.sleep(PAUSE_S)
    return took


def _acknowledged(producer: Producer, topic: str) -> float:
    settled: list[tuple[KafkaError | None, float]] = []
    began = time.perf_counter()
    producer.produce(topic, b"floor", on_delivery=lambda err, _: settled.append((err, _ms_since(began))))
    deadline = began + WAIT_S
    while not settled:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"Kafka did not acknowledge a record produced to {topic} within {WAIT_S:g} s")
        producer.poll(WAIT_S)  # returns as soon as it has served the delivery callback
    [(error, took)] = settled
    if error is not None:
        raise KafkaException(error)
    time.sleep(PAUSE_S)
    return took


async def _redis(count: int) -> list[float]:
    client = active_context.connect()
    try:
        return await _timed(client.ping, count)
    finally:
        await client.aclose()


async def _http(count: int) -> list[float]:
    async with aiohttp.ClientSession() as session:

        async def healthz() -> None:
            async with session.get(f"{settings.api.url}/healthz") as response:
                response.raise_for_status()
                await response.read()

        return await _timed(healthz, count)


async def _timed(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    times = []
    for _ in range(WARM_UP + count):
        began = time.perf_counter()
        await call()
        times.append(_ms_since(began))
        await asyncio.sleep(PAUSE_S)
    return times[WARM_UP:]


def _ms_since(began: float) -> float:
    return (time.perf_counter() - began) * 1000
