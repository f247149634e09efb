"""What reading a token from Triton costs the reader: gRPC (the bridge's way) against HTTP.

The bridge reads each generation as a gRPC ModelStreamInfer stream (`inference_bridge.
triton_stream.stream_text`), and every response is one token, so the read is the bridge's largest
cost per token (py-spy, 16 users of 128-token replies: ~a third of the bridge's GIL-holding
samples inside grpc.aio's `_read`). Triton also serves the same generation over HTTP, as
Server-Sent Events from its generate extension (`POST /v2/models/<model>/generate_stream`, the
same tensors as JSON fields); a connection closed early cancels the request there too.
Every reply is checked whole (all 128 tokens, none stalled past `STALL_S`): a cheaper read that
loses tokens is no option for the bridge.

This reads `--replies` replies of 128 tokens from the `scripted` model (instant), `--concurrency`
at a time, each way in turn for `--rounds` rounds, and reports the reader's own CPU µs per token
(`getrusage` of this process, both readers on uvloop like the bridge) and Triton's (its process
tree, from /proc) — Triton's, to show the HTTP frontend does not move the cost onto the server.
JSON in benchmarks/results/triton_transport.json. `python -m benchmarks.triton_transport` (stack up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from benchmarks.capacity import LONG_REPLY, long_message, root_pids, tree_cpu
from inference_bridge.triton_stream import Endpoint, InferenceError, Timeouts, prompt_text, stream_text
from infra.settings import settings
from schemas.events import ChatTurn

RESULTS = Path(__file__).parent / "results" / "triton_transport.json"
MODEL = "scripted"
PROMPT = [ChatTurn(role="user", content=long_message())]
SAMPLING = {"max_tokens": LONG_REPLY + 8}
STALL_S = 30.0
TIMEOUTS = Timeouts(first_token_s=STALL_S, token_s=STALL_S)

Reader = Callable[[], Awaitable[int]]  # reads one reply, returns its tokens (0: it stalled or failed)


def grpc_reader(endpoint: Endpoint) -> Reader:
    async def read() -> int:
        try:
            return sum([1 async for _ in stream_text(endpoint, MODEL, PROMPT, SAMPLING, TIMEOUTS)])
        except InferenceError:
            return 0

    return read


def http_reader(session: aiohttp.ClientSession) -> Reader:
    url = f"http://{settings.triton.server_host(0)}:{settings.triton.http_port}/v2/models/{MODEL}/generate_stream"
    body = {"text_input": prompt_text(PROMPT), "stream": True, "sampling_parameters": json.dumps(SAMPLING)}

    async def read() -> int:
        tokens = 0
        try:
            async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(sock_read=STALL_S)) as response:
                response.raise_for_status()
                async for line in response.content:
                    if line.startswith(b"data:") and json.loads(line[5:]).get("text_output"):
                        tokens += 1
        except (TimeoutError, aiohttp.ClientError):
            return 0
        return tokens

    return read


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(read: Reader, replies: int, concurrency: int) -> dict[str, float]:
    """CPU µs per token of this process and of Triton over `replies` replies, and how many
    replies came back short of LONG_REPLY tokens."""
    triton = root_pids()["triton"]
    await asyncio.gather(*(read() for _ in range(concurrency)))  # connections open, code paths warm
    own, server, began = own_cpu_s(), sum(tree_cpu(triton).values()), time.perf_counter()
    counts: list[int] = []
    for _ in range(replies // concurrency):
        counts += await asyncio.gather(*(read() for _ in range(concurrency)))
    wall_s, tokens = time.perf_counter() - began, sum(counts)
    return {
        "reader_us_per_token": (own_cpu_s() - own) * 1e6 / tokens,
        "triton_us_per_token": (sum(tree_cpu(triton).values()) - server) * 1e6 / tokens,
        "tokens_per_s": tokens / wall_s,
        "incomplete_replies": sum(count != LONG_REPLY for count in counts),
    }


async def main(args: argparse.Namespace) -> None:
    endpoint = Endpoint(settings.triton.grpc_url_of(0))
    runs: dict[str, list[dict[str, float]]] = {"grpc": [], "http": []}
    async with aiohttp.ClientSession() as session:
        readers = {"grpc": grpc_reader(endpoint), "http": http_reader(session)}
        for round_ in range(args.rounds):
            for way, read in readers.items():  # alternated: the machine's speed drifts
                runs[way].append(await measure(read, args.replies, args.concurrency))
                print(f"round {round_ + 1}/{args.rounds} {way}: {_line(runs[way][-1])}", flush=True)
    await endpoint.close()
    report: dict[str, Any] = {
        "command": f"python -m benchmarks.triton_transport --replies {args.replies} "
        f"--concurrency {args.concurrency} --rounds {args.rounds}",
        "tokens_per_reply": LONG_REPLY,
        "median": {way: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for way, rs in runs.items()},
        "incomplete_replies": {way: sum(r["incomplete_replies"] for r in rs) for way, rs in runs.items()},
        "runs": runs,
    }
    print(table(report["median"], report["incomplete_replies"]))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


def _line(run: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in run.items())


def table(median: dict[str, dict[str, float]], incomplete: dict[str, int]) -> str:
    rows = [
        "| way | reader µs/token | triton µs/token | tokens/s | incomplete replies (all rounds) |",
        "|---|---|---|---|---|",
    ]
    for way, m in median.items():
        rows.append(
            f"| {way} | {m['reader_us_per_token']:.1f} | {m['triton_us_per_token']:.1f} | "
            f"{m['tokens_per_s']:.0f} | {incomplete[way]} |"
        )
    return "\n".join(rows)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replies", type=int, default=160, help="replies read each way per round")
    parser.add_argument("--concurrency", type=int, default=16, help="replies read at a time")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each reading both ways")
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(arguments()))
