"""How fast replay rebuilds the views, next to the raw Cassandra write rate of the same rows.

1. log: a realistic conversation log of at least `--events` events on a scratch topic, spread
   over the last week: conversations of a few to some eighty messages, interleaved as their
   users' messages and replies arrive; some messages blocked, some replies cancelled, failed or
   regenerated; some conversations renamed, some deleted.
2. raw: the history rows of those events (`History.writes`, the very statements replay sends),
   bound and written straight with the driver's `execute_concurrent` at the same concurrency,
   into a fresh keyspace. Reading and decoding the log is not timed.
3. replay: `projections.replay.replay` of the topic into a fresh generation of the views
   (keyspace and Redis namespace): Kafka reads, decoding, the same history writes (each
   conversation's in log order) and the active context's scripts, pipelined.

Both run in this process, in the same run, with the whole stack up; the scratch topic, keyspaces
and Redis keys are removed afterwards. Prints a table and writes `benchmarks/results/replay.json`.
Run with `.venv/bin/python -m benchmarks.replay` (stack up; `--events` to change the size).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uuid_utils
from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent
from confluent_kafka import TopicPartition

from infra import cassandra, kafka_clients, migrate
from infra.kafka_clients import EventProducer
from infra.settings import settings
from projections import active_context
from projections.consuming import decode_event
from projections.generations import Generations
from projections.history import History
from projections.replay import BATCH_SIZE as REPLAY_BATCH
from projections.replay import replay
from schemas.events import (
    ConversationDeleted,
    ConversationRenamed,
    ConversationStarted,
    Event,
    MessageAccepted,
    MessageBlocked,
    MessageSubmitted,
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    Usage,
)
from schemas.topics import CONVERSATIONS, Topic
from tests.integration.scratch import scratch_copies

RESULTS = Path(__file__).parent / "results" / "replay.json"
SPAN = timedelta(days=7)
EVENTS_PER_CONVERSATION = 24  # about, with the mix below: sets how often conversations start
PRODUCE_CHUNK = 20_000
RAW_CHUNK = 20_000
VOCABULARY = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "you",
    "that",
    "for",
    "on",
    "with",
    "as",
    "are",
    "this",
    "be",
    "at",
    "or",
    "have",
    "from",
    "by",
    "not",
    "but",
    "what",
    "all",
    "can",
    "will",
    "an",
    "your",
    "which",
    "when",
    "there",
    "more",
    "one",
    "about",
    "so",
    "if",
    "out",
    "up",
    "do",
    "time",
    "how",
    "would",
    "like",
    "them",
    "model",
    "token",
    "stream",
    "reply",
    "context",
    "history",
    "cache",
    "replay",
    "event",
    "log",
    "kafka",
    "partition",
    "offset",
    "question",
    "answer",
    "python",
    "code",
    "function",
    "error",
    "data",
    "system",
    "user",
    "message",
    "conversation",
    "please",
    "thanks",
]


# --- the log ---------------------------------------------------------------------------------


def minted(at: datetime) -> str:
    """An id minted at that time (UUIDv7), as the API would have minted it then."""
    return str(uuid_utils.uuid7(nanoseconds=int(at.timestamp() * 1e9)))


def words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(VOCABULARY, k=rng.randint(low, high)))


class Conversation:
    """One conversation's events, each at its time, as the pipeline writes them to the log."""

    def __init__(self, rng: random.Random, user_id: str, started: datetime) -> None:
        self.rng, self.at = rng, started
        self.ids: dict[str, Any] = {"conversation_id": minted(started), "user_id": user_id}
        self.events: list[tuple[datetime, Event]] = []
        self.emit(ConversationStarted(**self.ids, title="" if rng.random() < 0.5 else words(rng, 2, 6)))

    def emit(self, event: Event) -> None:
        self.events.append((self.at, event.model_copy(update={"occurred_at": self.at})))

    def later(self, low_s: float, high_s: float) -> None:
        self.at += timedelta(seconds=self.rng.uniform(low_s, high_s))

    def exchange(self) -> None:
        """A user's message and how it ended; now and then the reply regenerated."""
        self.later(20, 120)
        submitted = MessageSubmitted(
            **self.ids,
            message_id=minted(self.at),
            response_id=minted(self.at),
            content=words(self.rng, 5, 60),
            model="smollm2",
        )
        self.emit(submitted)
        self.later(0.02, 0.05)
        if self.rng.random() < 0.03:
            self.emit(
                MessageBlocked(**self.pair(submitted), categories=["weapons"], reason="That request is not allowed.")
            )
            return
        self.answer(submitted)
        if self.rng.random() < 0.03:
            self.later(5, 30)
            again = submitted.model_copy(update={"response_id": minted(self.at), "replaces": submitted.response_id})
            self.emit(again)
            self.later(0.02, 0.05)
            self.answer(again)

    def answer(self, submitted: MessageSubmitted) -> None:
        self.emit(
            MessageAccepted(
                **self.pair(submitted), model=submitted.model, content=submitted.content, submitted_offset=0
            )
        )
        self.later(2, 15)
        fate, text = self.rng.random(), words(self.rng, 30, 300)
        if fate < 0.03:
            self.emit(ResponseFailed(**self.pair(submitted), error="triton unavailable"))
        elif fate < 0.08:
            self.emit(ResponseCancelled(**self.pair(submitted), text=text[: len(text) // 3]))
        else:
            usage = Usage(prompt_tokens=len(submitted.content.split()), completion_tokens=len(text.split()))
            self.emit(ResponseCompleted(**self.pair(submitted), text=text, finish_reason="stop", usage=usage))

    def pair(self, submitted: MessageSubmitted) -> dict[str, Any]:
        return {**self.ids, "message_id": submitted.message_id, "response_id": submitted.response_id}


def conversation(rng: random.Random, user_id: str, started: datetime) -> list[tuple[datetime, Event]]:
    talk = Conversation(rng, user_id, started)
    length = rng.randint(30, 80) if rng.random() < 0.02 else 1 + int(rng.expovariate(1 / 4))
    for n in range(length):
        talk.exchange()
        if n == 0 and rng.random() < 0.15:
            talk.later(1, 10)
            talk.emit(ConversationRenamed(**talk.ids, title=words(rng, 2, 6)))
    if rng.random() < 0.03:
        talk.later(60, 600)
        talk.emit(ConversationDeleted(**talk.ids))
    return talk.events


def log(events: int, seed: int = 7) -> Iterator[Event]:
    """At least `events` events in log order: conversations start at a steady rate over SPAN,
    and everyone's events are merged by time, so conversations interleave as they would live."""
    rng = random.Random(seed)
    users = [f"user-{n}" for n in range(max(1, events // 50))]
    started = datetime.now(UTC) - SPAN - timedelta(hours=1)
    every = SPAN / (events / EVENTS_PER_CONVERSATION)
    pending: list[tuple[datetime, int, Event]] = []
    made = 0
    while made < events:
        while pending and pending[0][0] < started:
            yield heapq.heappop(pending)[2]
        for at, event in conversation(rng, rng.choice(users), started):
            heapq.heappush(pending, (at, made, event))
            made += 1
        started += every
    while pending:
        yield heapq.heappop(pending)[2]


async def produce(topic: Topic, events: int) -> tuple[int, int]:
    """Write the log; returns how many events and conversations it holds."""
    producer = EventProducer(**{"linger.ms": 20, "batch.size": 1_000_000})
    sent, conversations, chunk = 0, 0, []
    try:
        for event in log(events):
            chunk.append(producer.send(topic, event))
            conversations += isinstance(event, ConversationStarted)
            if len(chunk) == PRODUCE_CHUNK:
                sent += len(await asyncio.gather(*chunk))
                chunk = []
        sent += len(await asyncio.gather(*chunk))
    finally:
        producer.close()
    return sent, conversations


# --- raw writes and replay -----------------------------------------------------------------


@dataclass
class Rate:
    rows: int = 0
    seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


async def decoded(topic: Topic, total: int, chunk: int) -> AsyncIterator[list[Event]]:
    """The topic's events, `chunk` at a time, read from the start until `total` were read."""
    consumer = kafka_clients.consumer(f"bench-replay-raw-{uuid.uuid4().hex[:8]}")
    consumer.assign([TopicPartition(topic.name, p, 0) for p in range(topic.partitions)])
    read = 0
    try:
        while read < total:
            records = await asyncio.to_thread(kafka_clients.next_batch, consumer, 1.0, chunk)
            read += len(records)
            yield [decode_event(record) for record in records]
    finally:
        consumer.close()


async def raw_rows(session: Session, topic: Topic, total: int) -> Rate:
    """Every history row of the events written as a statement of its own, a chunk's all at once
    with the driver's `execute_concurrent`; binding and writing timed, reading and decoding not."""
    history, rate = History(session), Rate()
    async for events in decoded(topic, total, RAW_CHUNK):
        began = time.perf_counter()
        statements = [statement for event in events for statement in (await history.writes(event)).all()]
        await asyncio.to_thread(
            execute_concurrent,
            session,
            [(statement, None) for statement in statements],
            concurrency=settings.projections.write_concurrency,
        )
        rate.seconds += time.perf_counter() - began
        rate.rows += len(statements)
    return rate


async def raw_history_writes(session: Session, topic: Topic, total: int) -> Rate:
    """Replay's own history writes alone (`History.apply_all` on replay's batches: a conversation's
    run of turn rows in one batch, in log order): no Kafka, no decoding, no active context."""
    history, rate = History(session), Rate()
    async for events in decoded(topic, total, REPLAY_BATCH):
        began = time.perf_counter()
        rate.rows += (await history.apply_all(events)).rows
        rate.seconds += time.perf_counter() - began
    return rate


@dataclass
class Figures:
    events: int
    conversations: int
    replay_rows: int
    replay_s: float
    replay_events_per_s: float
    replay_rows_per_s: float
    raw_rows_per_s: float  # each row its own statement
    raw_batched_rows_per_s: float  # replay's history writes alone

    @property
    def ratio(self) -> float:
        return self.replay_rows_per_s / self.raw_rows_per_s

    @property
    def ratio_batched(self) -> float:
        return self.replay_rows_per_s / self.raw_batched_rows_per_s


async def measure(events: int) -> Figures:
    cluster, session = cassandra.connect(timeout_s=60.0)
    client = active_context.connect()
    run = uuid.uuid4().hex[:8]
    keyspaces = {phase: f"bench_{phase}_{run}" for phase in ("rows", "batched", "replay")}
    try:
        with scratch_copies("bench-replay", [CONVERSATIONS]) as (topic,):
            began = time.perf_counter()
            count, _ = await produce(topic, events)
            print(f"log: {count:,} events, written in {time.perf_counter() - began:.0f} s")
            for keyspace in keyspaces.values():
                migrate.apply_all(keyspace)
            rows = await raw_rows(cluster.connect(keyspaces["rows"]), topic, count)
            print(
                f"raw, a statement per row: {rows.rows:,} rows in {rows.seconds:.0f} s ({rows.rows_per_s:,.0f} rows/s)"
            )
            batched = await raw_history_writes(cluster.connect(keyspaces["batched"]), topic, count)
            print(
                f"raw, replay's history writes: {batched.rows:,} rows in {batched.seconds:.0f} s "
                f"({batched.rows_per_s:,.0f} rows/s)"
            )
            known = Generations(cluster, client, settings.context, settings.cassandra.keyspace)
            projector = await known.views(keyspaces["replay"])
            summary = await replay(projector, topic)
            print(f"replay: {summary}")
    finally:
        for keyspace in keyspaces.values():
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        async for key in client.scan_iter(match=f"{keyspaces['replay']}:*", count=10_000):
            await client.unlink(key)
        await client.aclose()
        cluster.shutdown()
    return Figures(
        events=summary.read,
        conversations=len(summary.conversations),
        replay_rows=summary.rows,
        replay_s=summary.seconds,
        replay_events_per_s=summary.read / summary.seconds,
        replay_rows_per_s=summary.rows / summary.seconds,
        raw_rows_per_s=rows.rows_per_s,
        raw_batched_rows_per_s=batched.rows_per_s,
    )


def table(figures: Figures) -> str:
    return "\n".join(
        [
            "| events | conversations | history rows | replay | replay events/s | replay rows/s "
            "| raw rows/s, a statement per row | raw rows/s, replay's history writes alone | replay / raw |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {figures.events:,} | {figures.conversations:,} | {figures.replay_rows:,} | {figures.replay_s:.0f} s "
            f"| {figures.replay_events_per_s:,.0f} | {figures.replay_rows_per_s:,.0f} | {figures.raw_rows_per_s:,.0f} "
            f"| {figures.raw_batched_rows_per_s:,.0f} | {figures.ratio:.2f} / {figures.ratio_batched:.2f} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replay", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="at least this many events in the log")
    figures = asyncio.run(measure(parser.parse_args().events))
    print(table(figures))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(asdict(figures) | {"ratio": figures.ratio, "ratio_batched": figures.ratio_batched}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
