"""How much latency steno adds to a model's stream, and how much of its throughput it delivers.

For each concurrency level, in the same run and against the same `scripted` model (paced like a
GPU: settings.models["scripted"].sampling), it streams N replies two ways:

- direct: tritonclient's asyncio gRPC stream, as the bridge calls it (the baseline);
- steno: POST the message, then read the SSE stream: API → Kafka → moderation → context →
  bridge → Triton → token events → API fan-out → SSE. With `--api native-streamed` the reply is
  read in the POST's own response (`Accept: text/event-stream`) instead of a second request;
  with `--api openai` the steno side is the official openai SDK streaming `chat.completions`.

It reports time to first token (from the request; for steno from the POST) and the gaps between
tokens, p50/p95/p99 for both and the difference, plus tokens per second delivered, as a table on
stdout and JSON in benchmarks/results/pipeline.json. Run with `make bench` (stack up).

First it warms the stack up, unmeasured, as the capacity benchmark does (64 users of 1-token
replies until the stack's CPU per message stops falling, at most `--warmup-seconds`): right after
a start the JVMs are still compiling, and a fresh stack's first runs add two to three times the
latency a warm one does (ten streams: ratio 0.67 in the first run after `steno up`, 0.83 a minute
later). `--warmup-seconds 0` skips it on a stack already warm.

While each side streams it also reads every process's CPU (as the capacity benchmark does, the
stack's idle rate included) and reports how many of the machine's cores were busy, and the
ratio's CPU ceiling: the tokens/s of steno's run were it spread perfectly over every core,
against direct's. A ratio near its ceiling is short of cores; one well under it is the pipeline's
latency, which more cores would not buy back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import openai
import psutil

from benchmarks.capacity import STENO, CpuSnapshot, CpuUse, root_pids, warm_up
from benchmarks.load_client import LoadClient, User
from benchmarks.streams import Stream, percentile, timed
from inference_bridge.triton_stream import Endpoint, Timeouts, stream_text
from infra.settings import settings
from ingest_api.auth import issue_token
from schemas.events import ChatTurn

RESULTS = Path(__file__).parent / "results" / "pipeline.json"
MODEL = "scripted"
WORDS = 30  # each reply: "You said: " + 30 words = 32 tokens
WARMUP_USERS = 64  # the capacity benchmark's top level: load enough for the JVMs to compile their hot paths


@dataclass
class Run:
    concurrency: int
    streams: list[Stream] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # by process while streaming; "other": the rest

    def pool(self, other: Run) -> None:
        self.streams += other.streams
        self.wall_s += other.wall_s
        self.cpu_s = {name: self.cpu_s.get(name, 0.0) + other.cpu_s.get(name, 0.0) for name in self.cpu_s | other.cpu_s}

    def summary(self) -> dict[str, float]:
        ttft = [s.ttft_s * 1000 for s in self.streams]
        gaps = [g * 1000 for s in self.streams for g in s.gaps_s]
        tokens = sum(s.tokens for s in self.streams)
        busy_s = sum(self.cpu_s.values())
        return {
            **{f"ttft_p{p}_ms": percentile(ttft, p) for p in (50, 95, 99)},
            **{f"gap_p{p}_ms": percentile(gaps, p) for p in (50, 95, 99)},
            "tokens_per_s": tokens / self.wall_s,
            "tokens": tokens,
            "cores_busy": busy_s / self.wall_s,
            # the fastest this much CPU could have streamed the tokens, every core busy throughout
            "cpu_bound_tokens_per_s": tokens * CORES / busy_s,
            **{f"{name}_cpu_ms_per_reply": self.cpu_ms_per_reply(names) for name, names in SHARES.items()},
        }

    def cpu_ms_per_reply(self, names: tuple[str, ...]) -> float:
        return sum(self.cpu_s.get(name, 0.0) for name in names) * 1000 / len(self.streams)


CORES = psutil.cpu_count() or 1
SHARES = {"steno": STENO, "triton": ("triton",), "client": ("client",), "other": ("other",)}
# Issue 11's targets for steno's tokens/s against direct's, by number of streams.
TARGET_RATIOS = {10: 0.9, 100: 0.8}


def steno_cpu_budget_ms(direct: Run, steno: Run, ratio: float) -> float:
    """The most CPU a reply steno's processes may spend (their idle rate included) for its run to
    reach `ratio` of direct's tokens/s even with every core busy throughout, given what Triton, the
    client and the rest of the machine spent a reply in that run. A ratio short of cores is
    reached only by cutting steno's CPU a reply below this; a negative budget: by no steno.

    Replies are the unit because every reply has the same tokens on both sides."""
    replies_per_s = ratio * len(direct.streams) / direct.wall_s
    others = sum(steno.cpu_ms_per_reply(names) for name, names in SHARES.items() if name != "steno")
    return CORES * 1000 / replies_per_s - others


async def measured_run(run: Run, pids: dict[str, int], streams: Awaitable[list[Stream]]) -> Run:
    """`run` with the streams, the wall time they took and the CPU every process spent meanwhile."""
    before = CpuSnapshot.take(pids)
    began = time.perf_counter()
    run.streams = list(await streams)
    run.wall_s = time.perf_counter() - began
    run.cpu_s = CpuUse.between(before, CpuSnapshot.take(pids)).seconds
    return run


def message(index: int) -> str:
    return " ".join(f"w{index}-{i}" for i in range(WORDS))


async def direct_stream(client: Endpoint, index: int) -> Stream:
    prompt = [
        ChatTurn(role="system", content=settings.context.system_prompt),
        ChatTurn(role="user", content=message(index)),
    ]
    sampling = {"max_tokens": settings.models[MODEL].max_tokens, **settings.models[MODEL].sampling}
    started = time.perf_counter()
    return await timed(stream_text(client, MODEL, prompt, sampling, Timeouts(30, 30)), started)


async def steno_stream(user: User, conversation_id: str, index: int) -> Stream:
    started = time.perf_counter()
    return await timed(user.reply(conversation_id, message(index), model=MODEL), started)


async def openai_stream(client: openai.AsyncOpenAI, index: int) -> Stream:
    started = time.perf_counter()
    chunks = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": message(index)}], stream=True
    )
    return await timed((c async for c in chunks if c.choices and c.choices[0].delta.content), started)


async def run_openai(pids: dict[str, int], concurrency: int) -> Run:
    clients = [
        openai.AsyncOpenAI(base_url=f"{settings.api.url}/v1", api_key=issue_token(f"bench-{i}"), max_retries=0)
        for i in range(concurrency)
    ]
    run = await measured_run(
        Run(concurrency), pids, asyncio.gather(*(openai_stream(c, i) for i, c in enumerate(clients)))
    )
    await asyncio.gather(*(c.close() for c in clients))
    return run


async def run_direct(pids: dict[str, int], concurrency: int) -> Run:
    client = Endpoint(settings.triton.grpc_url)
    streams = asyncio.gather(*(direct_stream(client, i) for i in range(concurrency)))
    run = await measured_run(Run(concurrency), pids, streams)
    await client.close()
    return run


async def run_steno(pids: dict[str, int], concurrency: int, streamed: bool = False) -> Run:
    client = LoadClient(streamed)
    users = [client.user() for _ in range(concurrency)]
    conversations = await asyncio.gather(*(u.new_conversation() for u in users))
    pairs = enumerate(zip(users, conversations, strict=True))
    run = await measured_run(
        Run(concurrency), pids, asyncio.gather(*(steno_stream(u, conv, i) for i, (u, conv) in pairs))
    )
    await client.close()
    return run


def compare(direct: Run, steno: Run) -> dict[str, float]:
    d, s = direct.summary(), steno.summary()
    return {
        "concurrency": direct.concurrency,
        **{f"direct_{k}": v for k, v in d.items()},
        **{f"steno_{k}": v for k, v in s.items()},
        **{f"added_ttft_p{p}_ms": s[f"ttft_p{p}_ms"] - d[f"ttft_p{p}_ms"] for p in (50, 95, 99)},
        **{f"added_gap_p{p}_ms": s[f"gap_p{p}_ms"] - d[f"gap_p{p}_ms"] for p in (50, 95, 99)},
        "throughput_ratio": s["tokens_per_s"] / d["tokens_per_s"],
        "cpu_bound_ratio": min(1.0, s["cpu_bound_tokens_per_s"] / d["tokens_per_s"]),
        **_budget(direct, steno),
    }


def _budget(direct: Run, steno: Run) -> dict[str, float]:
    """The target ratio at this level, if issue 11 sets one, and steno's CPU budget a reply for it."""
    target = TARGET_RATIOS.get(direct.concurrency)
    if target is None:
        return {}
    return {"target_ratio": target, "steno_cpu_budget_ms_per_reply": steno_cpu_budget_ms(direct, steno, target)}


def table(rows: list[dict[str, float]]) -> str:
    head = (
        "| N | TTFT p50/p95/p99 direct (ms) | TTFT p50/p95/p99 steno (ms) | added TTFT p50/p95/p99 (ms) "
        "| gap p50/p99 direct → steno (ms) | tok/s direct → steno (ratio) |"
    )
    lines = [head, "|" + "---|" * 6]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} "
            f"| {r['direct_ttft_p50_ms']:.1f} / {r['direct_ttft_p95_ms']:.1f} / {r['direct_ttft_p99_ms']:.1f} "
            f"| {r['steno_ttft_p50_ms']:.1f} / {r['steno_ttft_p95_ms']:.1f} / {r['steno_ttft_p99_ms']:.1f} "
            f"| {r['added_ttft_p50_ms']:.1f} / {r['added_ttft_p95_ms']:.1f} / {r['added_ttft_p99_ms']:.1f} "
            f"| {r['direct_gap_p50_ms']:.1f}/{r['direct_gap_p99_ms']:.1f} "
            f"→ {r['steno_gap_p50_ms']:.1f}/{r['steno_gap_p99_ms']:.1f} "
            f"| {r['direct_tokens_per_s']:.0f} → {r['steno_tokens_per_s']:.0f} ({r['throughput_ratio']:.2f}) |"
        )
    return "\n".join(lines)


def cpu_table(rows: list[dict[str, float]]) -> str:
    head = (
        f"| N | cores busy (of {CORES}) direct → steno | CPU ms a reply, steno side: steno / triton / client / other "
        "| ratio | the ratio's CPU ceiling | target ratio: steno's CPU budget a reply (ms) |"
    )
    lines = [head, "|" + "---|" * 6]
    for r in rows:
        shares = " / ".join(f"{r[f'steno_{name}_cpu_ms_per_reply']:.1f}" for name in SHARES)
        budget = f"{r['target_ratio']:.1f}: {r['steno_cpu_budget_ms_per_reply']:.1f}" if "target_ratio" in r else ""
        lines.append(
            f"| {r['concurrency']} | {r['direct_cores_busy']:.2f} → {r['steno_cores_busy']:.2f} | {shares} "
            f"| {r['throughput_ratio']:.2f} | {r['cpu_bound_ratio']:.2f} | {budget} |"
        )
    return "\n".join(lines)


async def rounds(run: RunOnce, pids: dict[str, int], concurrency: int, count: int) -> Run:
    """Several rounds at one concurrency, pooled: one round of one stream is a single sample."""
    pooled = Run(concurrency)
    for _ in range(count):
        pooled.pool(await run(pids, concurrency))
    return pooled


RunOnce = Callable[[dict[str, int], int], Awaitable[Run]]
STENO_APIS: dict[str, RunOnce] = {
    "native": run_steno,
    "native-streamed": partial(run_steno, streamed=True),
    "openai": run_openai,
}


async def main(levels: list[int], count: int, api: str, warmup_s: float) -> None:
    run_api = STENO_APIS[api]
    pids = root_pids()
    if warmup_s:
        await warm_up(pids, WARMUP_USERS, warmup_s, streamed=True)
    await run_api(pids, 1)  # warm-up: first connections, cache-cold paths
    rows = []
    for n in levels:
        print(f"concurrency {n}: direct and steno ({api} API), {count} rounds each...", flush=True)
        direct = await rounds(run_direct, pids, n, count)
        steno = await rounds(run_api, pids, n, count)
        rows.append(compare(direct, steno))
    print(table(rows))
    print()
    print(cpu_table(rows))
    results = RESULTS.with_name(f"pipeline-{api}.json") if api != "native" else RESULTS
    results.parent.mkdir(exist_ok=True)
    report = {"model": MODEL, "api": api, "sampling": settings.models[MODEL].sampling, "rounds": count, "rows": rows}
    results.write_text(json.dumps(report, indent=2))
    print(f"wrote {results}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per concurrency level, pooled")
    parser.add_argument("--api", choices=sorted(STENO_APIS), default="native", help="which steno API the client uses")
    parser.add_argument(
        "--warmup-seconds", type=float, default=240.0, help="most unmeasured load before measuring; 0: none"
    )
    args = parser.parse_args()
    asyncio.run(main(args.concurrency, args.rounds, args.api, args.warmup_seconds))
