"""What the log and the history hold for the workload's responses, in the checker's terms."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import httpx
from confluent_kafka import TopicPartition

from infra import kafka_clients
from infra.partition_reads import read_bounds
from schemas.events import new_id
from schemas.serde import UndecodableEvent, decode
from schemas.topics import CONVERSATIONS, TOKENS, Topic
from tests.chaos.checker import FINAL_STATUSES, TERMINAL_EVENTS, Exchange, Held, Logged, Stored
from tests.chaos.workload import Client

SETTLE_S = 30.0  # how long history may take to show every outcome once the stack is healthy again


def log_since(topic: Topic, since_ms: int, timeout_s: float = 30.0) -> dict[str, list[Logged]]:
    """Each response's events in the topic from `since_ms` to the topic's current end, in log order."""
    consumer = kafka_clients.consumer(f"chaos-read-{new_id()}")  # only assign(): joins no group
    found: dict[str, list[Logged]] = defaultdict(list)
    deadline = time.monotonic() + timeout_s
    try:
        for partition in range(topic.partitions):
            start, end = read_bounds(consumer, TopicPartition(topic.name, partition, since_ms), deadline)
            if start < 0:
                continue
            consumer.assign([TopicPartition(topic.name, partition, start)])
            position = start
            while position < end:
                assert time.monotonic() < deadline, f"{topic.name}[{partition}] not read to {end} in {timeout_s}s"
                for record in map(kafka_clients.Record.of, kafka_clients.next_batch(consumer, timeout_s=1)):
                    position = record.offset + 1
                    _keep(found, record.offset, record.value)
        return found
    finally:
        consumer.close()


def _keep(found: dict[str, list[Logged]], offset: int, value: bytes | None) -> None:
    if value is None:
        return
    try:
        event = decode(value)
    except UndecodableEvent:
        return
    response_id = getattr(event, "response_id", None)
    if response_id is not None:
        found[response_id].append(Logged(offset, type(event).__name__, getattr(event, "text", "")))


async def settled_rows(client: Client, response_id: str) -> tuple[list[Stored], Held]:
    """The response's history rows, once the projection shows an outcome (or SETTLE_S passed),
    and what the client's history holds."""
    rows: list[Stored] = []
    held = Held()
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        try:
            conversations = await client.history()
        except httpx.HTTPStatusError as exc:  # judged as a history without the outcome, if it lasts
            rows = [Stored(f"HTTP {exc.response.status_code} reading history", "")]
        else:
            history = [row for turns in conversations.values() for row in turns]
            rows = [Stored(r["status"], r["content"]) for r in history if r["id"] == response_id]
            held = Held(len(conversations), sum(r["role"] == "user" for r in history))
            if rows and all(r.status in FINAL_STATUSES for r in rows):
                break
        await asyncio.sleep(0.2)
    return rows, held


def terminals(events: list[Logged]) -> list[Logged]:
    return [e for e in events if e.type in TERMINAL_EVENTS]


async def gather_evidence(
    clients: list[Client], since_ms: int
) -> list[tuple[Exchange, list[Logged], list[Logged], list[Stored], Held]]:
    """For each acknowledged exchange: its token events, its terminal events, its history rows,
    and the messages its client's history holds."""
    acked = [c for c in clients if c.exchange is not None]
    settled = await asyncio.gather(*(settled_rows(c, c.exchange.response_id) for c in acked))  # type: ignore[union-attr]
    tokens = await asyncio.to_thread(log_since, TOKENS, since_ms)
    conversations = await asyncio.to_thread(log_since, CONVERSATIONS, since_ms)
    evidence = []
    for client, (stored, held) in zip(acked, settled, strict=True):
        exchange = client.exchange
        assert exchange is not None
        rid = exchange.response_id
        evidence.append((exchange, tokens.get(rid, []), terminals(conversations.get(rid, [])), stored, held))
    return evidence
