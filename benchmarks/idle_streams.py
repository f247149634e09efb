"""What an idle SSE stream costs one API process, and that fan-out still reaches all of them.

A few users each send a message whose `scripted` reply streams a token every `--gap` seconds
(below the bridge's 30 s token timeout). Then N SSE streams (default 10,000) are opened on those
responses, spread evenly, at most `--opening` at a time, against the one API process on
127.0.0.1. Once all are open it reports the API process's RSS and open file descriptors against
a baseline taken before, waits for the next token of every response — a live token, emitted after
every stream was subscribed — and checks that each stream received it; then it cancels the
replies and checks that every stream ends with `done`.

The client is plain asyncio sockets (an HTTP/1.1 GET per stream, reading SSE lines), so 10,000
connections cost the client little; its file-descriptor limit is raised to what N needs.
JSON in benchmarks/results/idle_streams.json. `python -m benchmarks.idle_streams` (stack up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from infra import supervisor
from infra.settings import settings
from ingest_api.auth import issue_token
from tests.integration.steno_client import StenoClient, scripted

RESULTS = Path(__file__).parent / "results" / "idle_streams.json"
TOKENS = 30  # per reply: far more than the run needs; the replies are cancelled at the end


@dataclass
class Stream:
    """One SSE connection's view: when each token arrived, and whether the stream ended."""

    opened: asyncio.Event = field(default_factory=asyncio.Event)
    token_arrivals: list[float] = field(default_factory=list)
    done: bool = False


async def follow(response_id: str, token: str, stream: Stream, opening: asyncio.Semaphore) -> None:
    """GET the response's SSE stream and read it to its end, noting token arrivals."""
    async with opening:
        reader, writer = await asyncio.open_connection(settings.api.host, settings.api.port)
        request = (
            f"GET /v1/responses/{response_id}/events HTTP/1.1\r\nHost: {settings.api.host}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        )
        writer.write(request.encode())
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"stream of {response_id} refused: {status!r}")
        stream.opened.set()
    try:
        while line := await reader.readline():
            if line.startswith(b"event: token"):
                stream.token_arrivals.append(time.monotonic())
            elif line.startswith(b"event: "):
                stream.done = line.startswith(b"event: done")
                return
    finally:
        writer.close()


@dataclass
class Reply:
    user: StenoClient
    response_id: str


async def start_reply(gap_s: float) -> Reply:
    user = StenoClient()
    conversation = await user.new_conversation()
    script = " ".join(f"t{i}" for i in range(TOKENS))
    ids = await user.send(conversation, scripted("hold on", script=script, ttft_ms=0, itl_ms=gap_s * 1000))
    return Reply(user, ids["response_id"])


def api_process() -> psutil.Process:
    pid = supervisor.pid("api")
    if pid is None:
        raise SystemExit("the API is not running; start the stack with `make up` (`steno status`)")
    return psutil.Process(pid)


def raise_fd_limit(streams: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = streams + 256
    if needed > hard:
        raise SystemExit(f"{streams} streams need {needed} file descriptors; this shell allows {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit(args.streams)
    api = api_process()
    baseline = {"rss_mib": api.memory_info().rss / 2**20, "fds": api.num_fds()}
    replies = await asyncio.gather(*(start_reply(args.gap) for _ in range(args.responses)))
    tokens = {r.response_id: issue_token(r.user.user) for r in replies}
    streams = [Stream() for _ in range(args.streams)]
    opening = asyncio.Semaphore(args.opening)
    began = time.monotonic()
    spread = [replies[i % len(replies)].response_id for i in range(len(streams))]
    readers = [
        asyncio.create_task(follow(rid, tokens[rid], s, opening)) for rid, s in zip(spread, streams, strict=True)
    ]
    await asyncio.gather(*(s.opened.wait() for s in streams))
    all_open = time.monotonic()
    await asyncio.sleep(1.0)  # let the last streams' subscriptions and backlogs settle
    held = {"rss_mib": api.memory_info().rss / 2**20, "fds": api.num_fds()}
    print(f"{args.streams} streams open in {all_open - began:.1f} s; API RSS {held['rss_mib']:.0f} MiB", flush=True)
    live = await live_token_reached_all(streams, all_open + 1.0, args.gap + 15)
    await asyncio.gather(*(r.user.http.post(f"/v1/responses/{r.response_id}/cancel") for r in replies))
    await asyncio.wait_for(asyncio.gather(*readers), timeout=60)
    await asyncio.gather(*(r.user.close() for r in replies))
    report = summary(args, baseline, held, all_open - began, live, streams)
    report["api_restarted_during_run"] = supervisor.pid("api") != api.pid  # then the figures mean nothing
    print(json.dumps(report, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS}")


async def live_token_reached_all(streams: list[Stream], after: float, timeout_s: float) -> dict[str, Any]:
    """Wait until every stream got a token emitted after `after`; how many did, and how spread."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(_live(s, after) for s in streams):  # noqa: ASYNC110  (a count over 10k streams, once per 0.2 s)
        await asyncio.sleep(0.2)
    firsts = [t for s in streams if (t := _live(s, after)) is not None]
    return {
        "streams_with_live_token": len(firsts),
        "live_token_spread_s": max(firsts) - min(firsts) if firsts else None,
    }


def _live(stream: Stream, after: float) -> float | None:
    return next((t for t in stream.token_arrivals if t > after), None)


def summary(
    args: argparse.Namespace,
    baseline: dict[str, float],
    held: dict[str, float],
    open_s: float,
    live: dict[str, Any],
    streams: list[Stream],
) -> dict[str, Any]:
    grown = held["rss_mib"] - baseline["rss_mib"]
    return {
        "command": " ".join(["python -m benchmarks.idle_streams", *sys.argv[1:]]),
        "streams": args.streams,
        "responses": args.responses,
        "open_s": open_s,
        "api_rss_before_mib": baseline["rss_mib"],
        "api_rss_held_mib": held["rss_mib"],
        "api_rss_per_stream_kib": grown * 1024 / args.streams,
        "api_fds_before": baseline["fds"],
        "api_fds_held": held["fds"],
        **live,
        "streams_done": sum(s.done for s in streams),
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=10_000, help="SSE streams to hold open")
    parser.add_argument("--responses", type=int, default=10, help="replies the streams are spread over")
    parser.add_argument("--opening", type=int, default=200, help="streams being opened at once, at most")
    parser.add_argument("--gap", type=float, default=20.0, help="seconds between a reply's tokens (< 30)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(arguments()))
