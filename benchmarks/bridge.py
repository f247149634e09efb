"""What the inference bridge costs per token: Kafka in, Triton stream, token events out.

For each pace and concurrency, in the same run and against the same `scripted` model, it streams
N replies of TOKENS tokens two ways:

- direct: tritonclient's asyncio gRPC stream, as the bridge calls it (the baseline);
- bridge: an InferenceRequested produced to Kafka; the bridge, in its own process, streams from
  Triton and produces TokenGenerated events; this process tails the token topic.

Paces: "unpaced" (the model sends as fast as Triton's Python backend can: what limits throughput
is then the path itself) and "paced" (settings.models["scripted"].sampling, like a GPU model).
It reports tokens per second delivered, time to first token and the gaps between tokens, the
bridge's cost per token in time: (bridge wall time - direct wall time) / tokens per stream, and in
CPU: the bridge process's CPU time (all its threads: gRPC, librdkafka, the event loop) during the
run, less its idle rate (polling with nothing to do, measured for IDLE_S first) times the run's
wall time, / tokens delivered (each reply's own cost, a fraction of a millisecond, spread over its
tokens). The bridge runs on scratch topics, so the stack's own bridge does not see these requests.
Run with `.venv/bin/python -m benchmarks.bridge` (stack up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Consumer, TopicPartition

from benchmarks.streams import percentile
from inference_bridge.topics import Topics
from inference_bridge.triton_stream import Endpoint, Timeouts, stream_text
from infra.kafka_clients import EventProducer, next_batch
from infra.settings import settings
from schemas.events import ChatTurn, InferenceRequested, ResponseEnded, TokenGenerated, new_id
from schemas.serde import decode
from schemas.topics import Topic
from tests.integration.bridge_harness import running_bridge, scratch_topics

RESULTS = Path(__file__).parent / "results" / "bridge.json"
MODEL = "scripted"
TOKENS = 100
SCRIPT = " ".join(f"w{i}" for i in range(TOKENS))
PROMPT = [ChatTurn(role="user", content="benchmark")]
PACES: dict[str, Mapping[str, Any]] = {"unpaced": {}, "paced": settings.models[MODEL].sampling}
IDLE_S = 3.0


@dataclass
class Stream:
    started: float
    arrivals: list[float] = field(default_factory=list)

    @property
    def ttft_ms(self) -> float:
        return (self.arrivals[0] - self.started) * 1000

    @property
    def gaps_ms(self) -> list[float]:
        return [(b - a) * 1000 for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]


@dataclass
class Run:
    streams: list[Stream]
    wall_s: float
    cpu_s: float = 0.0  # through the bridge: the bridge process's CPU time during the run

    @property
    def tokens(self) -> int:
        return sum(len(s.arrivals) for s in self.streams)

    def summary(self) -> dict[str, float]:
        tokens = self.tokens
        gaps = [g for s in self.streams for g in s.gaps_ms]
        return {
            "tokens_per_s": tokens / self.wall_s,
            "wall_ms": self.wall_s * 1000,
            "ttft_p50_ms": statistics.median(s.ttft_ms for s in self.streams),
            "gap_p50_ms": percentile(gaps, 50),
            "gap_p99_ms": percentile(gaps, 99),
        }


# --- direct --------------------------------------------------------------------------------


async def run_direct(concurrency: int, pace: Mapping[str, Any]) -> Run:
    client = Endpoint(settings.triton.grpc_url)
    sampling = {**pace, "script": SCRIPT, "max_tokens": TOKENS}
    began = time.perf_counter()
    streams = await asyncio.gather(*(_direct_stream(client, sampling) for _ in range(concurrency)))
    wall = time.perf_counter() - began
    await client.close()
    return Run(list(streams), wall)


async def _direct_stream(client: Endpoint, sampling: dict[str, Any]) -> Stream:
    stream = Stream(time.perf_counter())
    async for _ in stream_text(client, MODEL, PROMPT, sampling, Timeouts(30, 30)):
        stream.arrivals.append(time.perf_counter())
    return stream


# --- through the bridge ----------------------------------------------------------------------


def serve(topics: Topics, pace: Mapping[str, Any], ready: Any, stop: Any) -> None:
    """The bridge's process: one bridge on the scratch topics until `stop` is set."""

    async def main() -> None:
        async with running_bridge(topics, {**pace, "script": SCRIPT}):
            ready.set()
            await asyncio.to_thread(stop.wait)

    asyncio.run(main())


@dataclass
class Client:
    """The user's side of the bridge, connected once: its first request must not pay for that."""

    topics: Topics
    producer: EventProducer
    tail: Consumer
    bridge: psutil.Process
    idle_cpu_per_s: float = 0.0

    async def measure_idle(self) -> None:
        """The bridge's CPU rate with no requests, subtracted from every run's."""
        before = _cpu_s(self.bridge)
        await asyncio.sleep(IDLE_S)
        self.idle_cpu_per_s = (_cpu_s(self.bridge) - before) / IDLE_S

    async def run(self, concurrency: int) -> Run:
        requests = [_request() for _ in range(concurrency)]
        streams = {r.response_id: Stream(0.0) for r in requests}
        pending = set(streams)
        cpu_before = _cpu_s(self.bridge)
        began = time.perf_counter()
        for request in requests:
            streams[request.response_id].started = time.perf_counter()
            self.producer.send(self.topics.inference_requests, request)
        async for response_id, arrived, ended in _token_events(self.tail):
            if ended:
                pending.discard(response_id)
                if not pending:
                    break
            elif response_id in streams:
                streams[response_id].arrivals.append(arrived)
        wall_s = time.perf_counter() - began
        return Run(list(streams.values()), wall_s, _cpu_s(self.bridge) - cpu_before - self.idle_cpu_per_s * wall_s)


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _request() -> InferenceRequested:
    return InferenceRequested(
        conversation_id=f"bench-bridge-{new_id()}",
        user_id="bench",
        message_id=new_id(),
        response_id=new_id(),
        model=MODEL,
        prompt=PROMPT,
        prompt_tokens=1,
        max_tokens=TOKENS,
    )


def _consumer_at_end(topic: Topic) -> Consumer:
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": "steno-bench"})
    ends = []
    for partition in range(topic.partitions):
        _, high = consumer.get_watermark_offsets(TopicPartition(topic.name, partition), timeout=10)
        ends.append(TopicPartition(topic.name, partition, high))
    consumer.assign(ends)
    return consumer


async def _token_events(consumer: Consumer) -> AsyncIterator[tuple[str, float, bool]]:
    """(response id, when it arrived here, whether it is the end) for each token-stream event."""
    while True:
        messages = await asyncio.to_thread(next_batch, consumer, 0.1)
        arrived = time.perf_counter()
        for message in messages:
            event = decode(message.value())
            if isinstance(event, TokenGenerated | ResponseEnded):
                yield event.response_id, arrived, isinstance(event, ResponseEnded)


# --- the report --------------------------------------------------------------------------------


def compare(pace: str, concurrency: int, direct: Run, bridge: Run) -> dict[str, Any]:
    d, b = direct.summary(), bridge.summary()
    return {
        "pace": pace,
        "concurrency": concurrency,
        **{f"direct_{k}": v for k, v in d.items()},
        **{f"bridge_{k}": v for k, v in b.items()},
        "added_ttft_ms": b["ttft_p50_ms"] - d["ttft_p50_ms"],
        "cost_per_token_ms": (b["wall_ms"] - d["wall_ms"]) / TOKENS,
        "bridge_cpu_us_per_token": bridge.cpu_s / bridge.tokens * 1e6,
        "throughput_ratio": b["tokens_per_s"] / d["tokens_per_s"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| pace | N | tok/s direct → bridge (ratio) | TTFT p50 direct → bridge (ms) "
        "| gap p50/p99 direct → bridge (ms) | bridge cost per token (ms) | bridge CPU per token (µs) |",
        "|" + "---|" * 7,
    ]
    for r in rows:
        lines.append(
            f"| {r['pace']} | {r['concurrency']} "
            f"| {r['direct_tokens_per_s']:.0f} → {r['bridge_tokens_per_s']:.0f} ({r['throughput_ratio']:.2f}) "
            f"| {r['direct_ttft_p50_ms']:.1f} → {r['bridge_ttft_p50_ms']:.1f} "
            f"| {r['direct_gap_p50_ms']:.2f}/{r['direct_gap_p99_ms']:.2f} → "
            f"{r['bridge_gap_p50_ms']:.2f}/{r['bridge_gap_p99_ms']:.2f} "
            f"| {r['cost_per_token_ms']:.3f} | {r['bridge_cpu_us_per_token']:.0f} |"
        )
    return "\n".join(lines)


async def bench_pace(pace: str, levels: list[int]) -> list[dict[str, Any]]:
    """Every concurrency level at one pace, with one bridge process serving all of them."""
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    with scratch_topics(f"bench-bridge-{uuid.uuid4().hex[:8]}") as topics:
        bridge = context.Process(target=serve, args=(topics, PACES[pace], ready, stop))
        bridge.start()
        client = Client(topics, EventProducer(), _consumer_at_end(topics.tokens), psutil.Process(bridge.pid))
        try:
            await asyncio.to_thread(ready.wait, 60)
            await client.run(1)  # warm-up: connections, first fetches
            await client.measure_idle()
            rows = []
            for n in levels:
                print(f"{pace}, concurrency {n}...", flush=True)
                rows.append(compare(pace, n, await run_direct(n, PACES[pace]), await client.run(n)))
            return rows
        finally:
            stop.set()
            bridge.join(60)
            client.tail.close()
            await asyncio.to_thread(client.producer.close)


async def main(levels: list[int]) -> None:
    rows = [row for pace in PACES for row in await bench_pace(pace, levels)]
    print(table(rows))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"model": MODEL, "tokens_per_stream": TOKENS, "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50])
    asyncio.run(main(parser.parse_args().concurrency))
