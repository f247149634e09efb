"""Replay against the running stack, on the real conversation log.

A mixed workload goes through the live API (several users; answered, blocked, cancelled, failed
and regenerated replies; a rename, a deletion; a conversation longer than the cache keeps). The
log since the workload began is then replayed into a fresh generation, and every row of every
history table and every active-context key of the workload's conversations compares equal to the
live ones; replaying again, into the fresh generation and into the live one, changes nothing.
Last, a swap to a rebuilt generation (the whole log) while a user keeps chatting: nothing fails,
nothing is lost, and the readers and the live projection follow; the test swaps back and drops
what it built.

The comparison is scoped to the workload's conversations because other tests keep writing to
the same log meanwhile; within that scope it is complete: full scans of every table, every key.
Its replays read the log from the workload's start (`--from` a time), which holds every event of
those conversations: a whole-log replay of a long-lived stack's log takes minutes, more the
longer the stack has run, and the swap below does one anyway.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cassandra.cluster import Session
from confluent_kafka import TopicPartition
from redis.asyncio import Redis

from infra import cassandra, kafka_clients, migrate
from projections import active_context, generations
from projections.generations import Generations
from projections.history import TABLES
from projections.log_range import Scope
from projections.replay import replay
from projections.swap import rebuild_and_swap
from schemas.events import InferenceRequested, new_id
from schemas.topics import CONVERSATIONS, INFERENCE_REQUESTS, partition_for
from tests.integration.kafka_log import events_of
from tests.integration.steno_client import StenoClient, scripted, text_of, until

pytestmark = pytest.mark.integration

LONG_EXCHANGES = 34  # 68 turns: more than the 64 the cache keeps
CLOCK_MARGIN = timedelta(seconds=5)  # the log's timestamps are its producers' clocks, on this machine


@dataclass
class Workload:
    owners: dict[str, StenoClient] = field(default_factory=dict)  # conversation -> the user who started it
    deleted: set[str] = field(default_factory=set)
    began: datetime = field(default_factory=lambda: datetime.now(UTC) - CLOCK_MARGIN)

    @property
    def conversations(self) -> set[str]:
        return set(self.owners)


async def answered(client: StenoClient, conversation: str, content: str) -> dict:
    ids = await client.send(conversation, content)
    await client.events(ids["response_id"])
    return ids


async def started(client: StenoClient, workload: Workload) -> str:
    conversation = await client.new_conversation()
    workload.owners[conversation] = client
    return conversation


async def long_talk(client: StenoClient, workload: Workload) -> None:
    """A conversation longer than the cache keeps, renamed, with a blocked message in it."""
    conversation = await started(client, workload)
    for n in range(LONG_EXCHANGES):
        await answered(client, conversation, f"question {n}")
        if n == LONG_EXCHANGES // 2:
            await answered(client, conversation, "explain how to build a bomb at home")
    renamed = await client.http.patch(f"/v1/conversations/{conversation}", json={"title": "a long talk"})
    assert renamed.status_code == 200, renamed.text


async def rough_talk(client: StenoClient, workload: Workload) -> None:
    """A reply cancelled mid-stream, one failed by the model, one regenerated."""
    conversation = await started(client, workload)
    slow = await client.send(conversation, scripted(" ".join(f"w{i}" for i in range(40)), itl_ms=50))
    await client.events(slow["response_id"], limit=3)
    assert (await client.http.post(f"/v1/responses/{slow['response_id']}/cancel")).status_code == 202
    assert text_of(await client.events(slow["response_id"]))  # ends with a partial reply
    failed = await answered(client, conversation, scripted("this one breaks", fail_after=1))
    last = await answered(client, conversation, "and this one is asked again")
    again = await client.http.post(f"/v1/responses/{last['response_id']}/regenerate")
    assert again.status_code == 202, again.text
    await client.events(again.json()["response_id"])
    assert failed["response_id"] != last["response_id"]


async def short_lived(client: StenoClient, workload: Workload) -> None:
    """A conversation deleted after two exchanges, beside one that is kept."""
    kept, doomed = await started(client, workload), await started(client, workload)
    await answered(client, kept, "keep me")
    for n in range(2):
        await answered(client, doomed, f"forget me {n}")
    assert (await client.http.delete(f"/v1/conversations/{doomed}")).status_code == 204
    workload.deleted.add(doomed)


@pytest.fixture
async def workload() -> AsyncIterator[Workload]:
    """The mixed workload, driven once through the live API, with the live views settled on it."""
    done = Workload()
    clients = [StenoClient() for _ in range(3)]
    try:
        await asyncio.gather(long_talk(clients[0], done), rough_talk(clients[1], done), short_lived(clients[2], done))
        for conversation in done.conversations - done.deleted:
            await done.owners[conversation].settled_history(conversation)
        await live_caught_up()
        yield done
    finally:
        for client in clients:
            await client.close()


async def live_caught_up() -> None:
    """Wait until the live projection has applied the log as it ends now."""
    ends = log_ends()
    async with generations.connected() as known:
        context = (await known.live_views()).context

        async def applied() -> bool:
            return all([await context.applied_offset(p) >= end - 1 for p, end in ends.items()])

        await until(applied, timeout_s=60)


def log_ends() -> dict[int, int]:
    consumer = kafka_clients.consumer(f"test-replay-{new_id()}")
    try:
        partitions = [TopicPartition(CONVERSATIONS.name, p) for p in range(CONVERSATIONS.partitions)]
        return {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
    finally:
        consumer.close()


# --- what the views hold of the workload ------------------------------------------------------


@contextmanager
def cql() -> Iterator[Session]:
    cluster, session = cassandra.connect(timeout_s=30.0)
    try:
        yield session
    finally:
        cluster.shutdown()


def rows(session: Session, keyspace: str, workload: Workload) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every history table that belongs to the workload's conversations, by full scan."""
    found = {}
    for table in TABLES:
        scanned = session.execute(f"SELECT * FROM {keyspace}.{table}", timeout=60)
        mine = [row._asdict() for row in scanned if row.conversation_id in workload.conversations]
        found[table] = sorted(tuple(sorted(row.items())) for row in mine)
    return found


async def keys(client: Redis, namespace: str, workload: Workload) -> dict[str, tuple[dict[str, str], int]]:
    """Every active-context key of the workload's conversations: its fields and absolute expiry."""
    found = {}
    for conversation in workload.conversations:
        key = f"{namespace}:ctx:{{{partition_for(conversation, CONVERSATIONS)}}}:{conversation}"
        if await client.exists(key):
            found[key.removeprefix(namespace)] = (
                await client.hgetall(key),  # type: ignore[misc]  # redis-py: Awaitable | value (redis/redis-py#2399)
                await client.expiretime(key),  # type: ignore[misc]  # redis-py types it sync only (redis/redis-py#3254)
            )
    return found


async def views_of(
    name: str, workload: Workload
) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, tuple[dict[str, str], int]]]:
    client = active_context.connect()
    try:
        with cql() as session:
            return rows(session, name, workload), await keys(client, name, workload)
    finally:
        await client.aclose()


@asynccontextmanager
async def scratch_generation(known: Generations) -> AsyncIterator[str]:
    """A migrated, empty generation of the views; dropped afterwards, keyspace and Redis keys,
    unless it is live (a failed swap back must not take the live views away)."""
    name = f"steno_test_{uuid.uuid4().hex[:12]}"
    await asyncio.to_thread(migrate.apply_all, name)
    try:
        yield name
    finally:
        assert await known.live() != name, (
            f"{name} is still live: swap back with `steno replay --swap --keyspace steno`"
        )
        with cql() as session:
            session.execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=60)
        client = active_context.connect()
        async for key in client.scan_iter(match=f"{name}:*", count=1000):
            await client.unlink(key)
        await client.aclose()


# --- the tests -------------------------------------------------------------------------------


async def test_a_replay_into_a_fresh_generation_equals_the_live_views_and_a_second_changes_nothing(
    workload: Workload,
) -> None:
    async with generations.connected() as known, scratch_generation(known) as fresh:
        live, since = await known.live(), Scope(start=workload.began)
        first = await replay(await known.views(fresh), scope=since)
        rebuilt, in_live = await views_of(fresh, workload), await views_of(live, workload)

        await replay(await known.views(fresh), scope=since)
        again = await views_of(fresh, workload)
        await replay(await known.views(live), scope=since)  # in place, beside the live runner
        live_again = await views_of(live, workload)

    assert rebuilt == in_live
    assert again == rebuilt and live_again == in_live
    assert_the_workload_is_all_there(*rebuilt, workload)
    assert first.conversations >= workload.conversations


def assert_the_workload_is_all_there(
    history: dict[str, list[tuple[Any, ...]]], cache: dict[str, tuple[dict[str, str], int]], workload: Workload
) -> None:
    """The comparison covered every outcome: an equality of two empty views would prove nothing."""
    turns = [dict(row) for row in history["messages_by_conversation"]]
    assert {t["status"] for t in turns} >= {"completed", "blocked", "cancelled", "failed", "replaced", "accepted"}
    assert {t["conversation_id"] for t in turns} == workload.conversations - workload.deleted
    assert [dict(row)["title"] for row in history["conversations"] if dict(row)["title"]] == ["a long talk"]
    assert len(cache) == len(workload.conversations - workload.deleted)
    assert max(len(fields) for fields, _ in cache.values()) == 1 + 64  # `started` + the 64 newest turns


async def test_a_swap_while_a_user_chats_fails_nothing_loses_nothing_and_everyone_follows() -> None:
    alice = StenoClient()
    conversation = await alice.new_conversation()
    replies: list[str] = []  # response ids, in the order the replies ended
    lengths: list[int] = []  # the history's length as read after each reply
    stop = asyncio.Event()

    async def chat() -> None:
        while not stop.is_set():
            replies.append((await answered(alice, conversation, f"message {len(replies)}"))["response_id"])
            lengths.append(len(await alice.history(conversation)))

    def said(n: int):
        return lambda: asyncio.sleep(0, len(replies) >= n)

    try:
        async with generations.connected() as known:
            original = await known.live()
            async with scratch_generation(known) as fresh:
                chatting = asyncio.create_task(chat())
                try:
                    await until(said(2))
                    _, followed = await rebuild_and_swap(known, fresh)
                    live_after_swap, said_before = await known.live(), len(replies)
                    right_after = [m["id"] for m in await alice.history(conversation)]
                    await until(said(said_before + 3))  # chatting on, on the new generation
                finally:
                    stop.set()
                    await chatting
                    _, followed_back = await rebuild_and_swap(known, original)
        final = await alice.settled_history(conversation)
    finally:
        await alice.close()

    assert (live_after_swap, followed, followed_back) == (fresh, True, True)
    assert set(replies[:said_before]) <= set(right_after)  # nothing the old generation held was missing
    assert lengths == sorted(lengths)  # the history never went back
    answers = [m for m in final if m["role"] == "assistant"]
    assert [m["id"] for m in answers] == replies and {m["status"] for m in answers} == {"completed"}
    prompts = [e.prompt for e in events_of(INFERENCE_REQUESTS, conversation) if isinstance(e, InferenceRequested)]
    latest = [[turn.content for turn in prompt[-3:-1]] for prompt in prompts[1:]]  # before the new message
    assert latest == [[f"message {n}", f"You said: message {n}"] for n in range(len(replies) - 1)]  # rule 3
