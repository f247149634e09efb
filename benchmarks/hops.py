"""Where one message's time goes on its way to the first token: each event's Kafka timestamp.

Messages go one at a time, on a quiet stack (latency, not load), or with `--burst N` N at the
same instant, each in a conversation of its own (a burst like the pipeline benchmark's: where a
burst's time goes, stage by stage). Every event of the run's user is read back from the log
(`steno.conversations`, `steno.inference-requests`, `steno.tokens`), and the first of each type
within each message's exchange (in its conversation) is taken from its CreateTime (the
producing process's clock when it produced the record: every process is on this machine)
against the moment the client sent the message; the client's first token and end are measured
by the client. Medians and p90 of each, in the order a message meets them, and the mean of each
one's time after the one before it, exchange by exchange (a hop's own time).

`--api native`: one conversation, its messages one after another, each reply read in the POST's
own response (`Accept: text/event-stream`); with `--new-conversations`, each message in a new
conversation created just before it, as the chat page sends a new chat's first message (the
exchange then starts at the creation's POST). `--api openai`: the official SDK's streamed chat
completions, each request a new conversation (ConversationStarted is then part of the exchange).
The `scripted` model answers with one token at once (`ttft_ms` 0), so what is measured is steno's.

Run with `.venv/bin/python -m benchmarks.hops [--api native|openai] [--new-conversations]
[--messages N] [--burst N]` (stack up); JSON in benchmarks/results/hops-<api>[-new-conversations]
[-burst<N>].json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from functools import partial
from itertools import pairwise
from pathlib import Path

import openai

from benchmarks import floors
from benchmarks.load_client import LoadClient
from infra.partition_reads import records_since
from infra.settings import settings
from ingest_api.auth import issue_token
from schemas.events import new_id
from schemas.topics import CONVERSATIONS, INFERENCE_REQUESTS, TOKENS

RESULTS = Path(__file__).parent / "results"
MESSAGE = "scripted: " + json.dumps({"script": "ok", "ttft_ms": 0, "itl_ms": 0}) + "\nhello"  # answered at once
PAUSE_S = 0.05  # between messages: the previous one's trailing work (projection, commits) settles


@dataclass(frozen=True)
class Exchange:
    sent_ms: float  # wall clock, as the Kafka timestamps are
    first_token_ms: float
    done_ms: float
    created_ms: float | None = None  # the conversation's creation answered (`--new-conversations`)
    conversation_id: str | None = None  # its events are this conversation's (`--burst`)


async def native(user: str, count: int, new_conversations: bool) -> list[Exchange]:
    client = LoadClient(streamed=True)
    me = client.user(user)
    conversation = await me.new_conversation()
    exchanges = []
    for _ in range(count):
        began = time.time() * 1000
        if new_conversations:
            conversation = await me.new_conversation()
        created = time.time() * 1000
        exchange = await _timed(partial(me.reply, conversation, MESSAGE))
        exchanges.append(replace(exchange, sent_ms=began, created_ms=created) if new_conversations else exchange)
        await asyncio.sleep(PAUSE_S)
    await client.close()
    return exchanges


async def burst(user: str, count: int, size: int) -> list[Exchange]:
    """`count` bursts of `size` messages sent at once, each in its own conversation."""
    client = LoadClient(streamed=True)
    me = client.user(user)
    conversations = [await me.new_conversation() for _ in range(size)]

    async def exchange(conversation: str) -> Exchange:
        timed = await _timed(partial(me.reply, conversation, MESSAGE))
        return replace(timed, conversation_id=conversation)

    exchanges = []
    for _ in range(count):
        exchanges += await asyncio.gather(*map(exchange, conversations))
        await asyncio.sleep(PAUSE_S)
    await client.close()
    return exchanges


async def via_openai(user: str, count: int) -> list[Exchange]:
    client = openai.AsyncOpenAI(base_url=f"{settings.api.url}/v1", api_key=issue_token(user), max_retries=0)

    async def completion() -> AsyncIterator[object]:
        chunks = await client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": MESSAGE}], stream=True
        )
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk

    exchanges = []
    for _ in range(count):
        exchanges.append(await _timed(completion))
        await asyncio.sleep(PAUSE_S)
    await client.close()
    return exchanges


async def _timed(reply: Callable[[], AsyncIterator[object]]) -> Exchange:
    sent = time.time() * 1000
    first = None
    async for _ in reply():
        first = first or time.time() * 1000
    return Exchange(sent, first or float("nan"), time.time() * 1000)


Logged = tuple[float, str, str]
"""An event in the log: its CreateTime (ms), type and conversation."""


def logged_events(user: str, since_ms: float) -> list[Logged]:
    """(CreateTime, type, conversation) of every event of the user since then, in any partition of
    the three topics."""
    found = []
    for topic in (CONVERSATIONS, INFERENCE_REQUESTS, TOKENS):
        for partition in range(topic.partitions):
            records = records_since(topic.name, partition, int(since_ms) - 1, reader="steno-bench-hops")
            with closing(records):
                for record in records:
                    event = json.loads(record.value() or b"{}")
                    if event.get("user_id") == user:
                        found.append((float(record.timestamp()[1]), event["type"], event["conversation_id"]))
    return found


Timeline = dict[str, float]
"""One exchange: each event type's time from the sending (ms), the first of its type in the exchange."""


def timelines(exchanges: list[Exchange], events: list[Logged]) -> list[Timeline]:
    """Each exchange's timeline, from the log's events and the client's own times."""
    in_order = sorted(events)
    lines = []
    for exchange in exchanges:
        times: Timeline = {}
        for at, kind, conversation in in_order:
            if exchange.conversation_id not in (None, conversation):
                continue
            if exchange.sent_ms - 1 <= at <= exchange.done_ms:
                times.setdefault(kind, at - exchange.sent_ms)
        if exchange.created_ms is not None:
            times["client: conversation created"] = exchange.created_ms - exchange.sent_ms
        times["client: first token"] = exchange.first_token_ms - exchange.sent_ms
        times["client: end"] = exchange.done_ms - exchange.sent_ms
        lines.append(times)
    return lines


def by_kind(lines: list[Timeline]) -> dict[str, list[float]]:
    """Each event type's times, in the order a message meets them (by their medians)."""
    times: dict[str, list[float]] = {}
    for line in lines:
        for kind, at in line.items():
            times.setdefault(kind, []).append(at)
    return dict(sorted(times.items(), key=lambda item: statistics.median(item[1])))


def steps(lines: list[Timeline], kinds: list[str]) -> dict[str, list[float]]:
    """Each type's time after the type before it, exchange by exchange: a hop's own time, without
    the noise of every hop before it that its time from the sending carries. Kafka's timestamps
    have whole milliseconds, so these are reported as means (a median of whole numbers is one)."""
    return {
        kind: [line[kind] - line[before] for line in lines if kind in line and before in line]
        for before, kind in pairwise(kinds)
    }


def table(times: dict[str, list[float]], hops: dict[str, list[float]]) -> str:
    lines = [
        "| from sending the message to | p50 (ms) | p90 (ms) | after the row above, mean (ms) | n |",
        "|---|---|---|---|---|",
    ]
    for kind, values in times.items():
        step = f"{statistics.fmean(hops[kind]):.1f}" if hops.get(kind) else ""
        lines.append(f"| {kind} | {statistics.median(values):.1f} | {_p90(values):.1f} | {step} | {len(values)} |")
    return "\n".join(lines)


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]


async def main(api: str, count: int, new_conversations: bool, size: int) -> None:
    user = f"bench-hops-{new_id()}"
    run: Callable[[str, int], Awaitable[list[Exchange]]]
    if size > 1:
        run = partial(burst, size=size)
    elif api == "native":
        run = partial(native, new_conversations=new_conversations)
    else:
        run = via_openai
    await run(user, 3)  # warm-up: connections, the first request's imports
    exchanges = await run(user, count)
    lines = timelines(exchanges, logged_events(user, exchanges[0].sent_ms))
    times = by_kind(lines)
    hops = steps(lines, list(times))
    how = f"bursts of {size} at once" if size > 1 else "messages, one at a time"
    print(f"{count} {how}, --api {api}{' --new-conversations' * new_conversations}")
    print(table(times, hops))
    path = await _against_floors(lines) if size == 1 else None
    variant = "-new-conversations" * new_conversations + f"-burst{size}" * (size > 1)
    out = RESULTS / f"hops-{api}{variant}.json"
    result = {
        "api": api,
        "new_conversations": new_conversations,
        "messages": count,
        "burst": size,
        "ms": times,
        "steps_ms": hops,
        **(path or {}),
    }
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps(result))
    print(f"wrote {out}")


async def _against_floors(lines: list[Timeline]) -> dict[str, object]:
    """The path's hops beside their floors, measured now (`benchmarks.floors`); printed, and
    returned for the JSON."""
    measured = await floors.measure()
    rows = floors.path_rows(lines, measured)
    print(floors.path_table(rows, measured))
    return {
        "floors_ms": asdict(measured),
        "path": [
            {"from": row.hop.start, "to": row.hop.end, "steno_ms": row.steno_ms, "floor_ms": row.floor_ms}
            for row in rows
        ],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", choices=["native", "openai"], default="native")
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--new-conversations", action="store_true", help="native: each message in a new one")
    parser.add_argument("--burst", type=int, default=1, help="native: N messages at once, one per conversation")
    args = parser.parse_args()
    if args.burst > 1 and (args.api != "native" or args.new_conversations):
        parser.error("--burst goes with --api native, each burst in the conversations made for it")
    asyncio.run(main(args.api, args.messages, args.new_conversations, args.burst))
