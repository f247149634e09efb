"""What a message and a token cost steno, in CPU per process, and how many it sustains.

With the whole stack up, K users talk to the native API in a closed loop: each sends a message,
reads its SSE stream to `done`, then sends the next (the stream read with a GET after the POST's
202, or with `--streamed` in the POST's own response). The `scripted` model answers at once
(`ttft_ms`/`itl_ms` 0, set by the message itself), so the stack's own cost is all there is.

0. warm-up: the same load, unmeasured, until CPU per message is steady (the JVMs' compilers are
   done; bounded by `--warmup-seconds`);
1. idle: every process's CPU rate with no load (subtracted from every later phase);
2. messages: 1-token replies at rising numbers of users: messages/s, TTFT, and each process's
   CPU ms per message (its CPU during the phase, minus its idle rate times the phase's wall time,
   divided by the messages);
3. tokens: replies of 128 tokens: tokens/s delivered over SSE, and CPU µs per token (the
   phase's CPU less idle and less the per-message cost measured at the same number of users);
4. repeats (`--repeat N`): phases 2 and 3 at the long replies' number of users, N times in
   all, reported with their median and range: on a shared machine whose speed drifts, one run
   says little, and a target counts as met only by the median;
5. open loop: messages arriving as a Poisson process at 50 % and 90 % of the saturation rate
   (the best messages/s of phase 2): TTFT p50/p99 measured from each message's arrival;
6. a GPU's pace (`--paced-users`): replies of 128 tokens at the `scripted` model's own pace
   (`settings.models["scripted"].sampling`: 20 ms to the first token, 10 ms between tokens), in a
   closed loop: CPU µs per token *all in* (the phase's CPU less idle, per-message work included,
   over its tokens). An instant model lets tokens share wake-ups, fetches and produce requests;
   at a model's pace each token pays its own, so this is the figure to size a fleet's cores by.

CPU is read from /proc through psutil, for each process with all its children (Triton's Python
backend stubs). The machine's total busy CPU is recorded too, so another workload sharing the
machine shows up as `other`. JSON in benchmarks/results/capacity.json, tables on stdout.
Run with `make bench` or `python -m benchmarks.capacity` (stack up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks import load_client
from benchmarks.load_client import LoadClient
from benchmarks.streams import Stream, percentile, timed
from infra import process, stack, supervisor
from infra.app_services import PROGRAMS
from infra.settings import settings
from tests.integration.steno_client import scripted

RESULTS = Path(__file__).parent / "results" / "capacity.json"
HEADLINE = {"ms_per_message": ".1f", "us_per_token": ".0f", "messages_per_s": ".1f", "tokens_per_s": ".0f"}
"""steno's figures at the top load, repeated to see their spread (phase 4), and their formats."""
STENO = ("api", "processors", "bridge", "projections", "kafka", "cassandra", "redis")
"""steno's side of the machine; triton (the model server) is reported apart."""
INSTANT = {"ttft_ms": 0, "itl_ms": 0}
LONG_REPLY = 128  # tokens per reply in the tokens phase (the scripted model's max_tokens)
IDLE_LIMIT = 0.05  # CPU s/s of a steno process with no load above which something else is using it
WARMUP_WINDOW_S = 5.0
STEADY_WINDOWS = 3  # warm-up windows in a row none 5 % below the best before it: the JVMs' compilers are done
EXCHANGE_TIMEOUT_S = 30.0  # a reply not done by then: a process of the stack is down (`steno status`)


def short_message() -> str:
    """A message whose reply is one token, at once."""
    return scripted("hello there", script="ok", **INSTANT)


def long_message(pace: dict[str, Any] = INSTANT) -> str:
    """A message whose reply is LONG_REPLY tokens, at once or at `pace` (the model's ttft_ms, itl_ms)."""
    return scripted("tell me more", script=" ".join(f"t{i}" for i in range(LONG_REPLY)), **pace)


# --- CPU per process ---------------------------------------------------------------------------


def root_pids() -> dict[str, int]:
    """The PID of each measured process: steno's under supervisord, the servers from PID files."""
    pids = {program.name: supervisor.pid(program.name) for program in PROGRAMS}
    pids |= {server.name: process.running_pid(server) for server in stack.servers()}
    missing = sorted(name for name, pid in pids.items() if pid is None)
    if missing:
        raise SystemExit(f"not running: {', '.join(missing)}; start the stack with `make up` (`steno status`)")
    return {name: pid for name, pid in pids.items() if pid is not None}


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of a process and each of its descendants, by PID."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    seconds = {}
    for member in tree:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[member.pid] = times.user + times.system
    return seconds


@dataclass
class CpuSnapshot:
    at: float
    per_pid: dict[str, dict[int, float]]
    machine_busy_s: float

    @classmethod
    def take(cls, pids: dict[str, int]) -> CpuSnapshot:
        """Every measured process, this benchmark's own as `client`, and the whole machine."""
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        trees = {name: tree_cpu(pid) for name, pid in {**pids, "client": os.getpid()}.items()}
        return cls(time.perf_counter(), trees, busy)


@dataclass
class CpuUse:
    """CPU seconds each process spent between two snapshots, and the wall time between them."""

    wall_s: float
    seconds: dict[str, float]

    @classmethod
    def between(cls, before: CpuSnapshot, after: CpuSnapshot) -> CpuUse:
        """A PID present in both counts its difference, a child born meanwhile all of its time."""
        seconds = {
            name: sum(cpu - before.per_pid[name].get(pid, 0.0) for pid, cpu in tree.items())
            for name, tree in after.per_pid.items()
        }
        measured = sum(seconds.values())
        seconds["other"] = max(0.0, after.machine_busy_s - before.machine_busy_s - measured)
        return cls(after.at - before.at, seconds)

    def beyond_idle(self, idle: CpuUse) -> dict[str, float]:
        """CPU seconds above each process's idle rate over the same wall time (`other`, the
        rest of the machine, is not steno's: reported as is, as a measure of the noise)."""
        return {
            name: s - (0.0 if name == "other" else idle.seconds[name] / idle.wall_s * self.wall_s)
            for name, s in self.seconds.items()
        }


async def measured(pids: dict[str, int], work: Awaitable[Any]) -> tuple[Any, CpuUse]:
    before = CpuSnapshot.take(pids)
    result = await work
    return result, CpuUse.between(before, CpuSnapshot.take(pids))


def with_totals(per_process: dict[str, float]) -> dict[str, float]:
    return {**per_process, "steno": sum(per_process[name] for name in STENO)}


# --- load ----------------------------------------------------------------------------------------


@dataclass
class User:
    http: load_client.User
    conversation_id: str

    @classmethod
    async def new(cls, client: LoadClient) -> User:
        http = client.user()
        return cls(http, await http.new_conversation())

    async def exchange(self, content: str, started: float | None = None) -> Stream:
        """Send a message and read its reply to the end; TTFT from `started` (default: now)."""
        started = time.perf_counter() if started is None else started
        async with asyncio.timeout(EXCHANGE_TIMEOUT_S):
            return await timed(self.http.reply(self.conversation_id, content), started)


@asynccontextmanager
async def users(count: int, streamed: bool = False) -> AsyncIterator[list[User]]:
    """`count` users, each with a conversation of its own, over one HTTP session; `streamed`:
    each reply read in its POST's response (see load_client)."""
    client = LoadClient(streamed)
    try:
        yield list(await asyncio.gather(*(User.new(client) for _ in range(count))))
    finally:
        await client.close()


@dataclass
class Load:
    streams: list[Stream] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.streams)

    def ttft_ms(self) -> dict[str, float]:
        ttft = [s.ttft_s * 1000 for s in self.streams]
        return {f"ttft_p{p}_ms": percentile(ttft, p) for p in (50, 99)}


async def closed_loop(people: list[User], content: str, seconds: float) -> Load:
    """Every user sends, reads to the end, and sends again until `seconds` have passed."""
    load = Load()
    began = time.perf_counter()
    stop_at = began + seconds

    async def talk(user: User) -> None:
        while time.perf_counter() < stop_at:
            load.streams.append(await user.exchange(content))

    await asyncio.gather(*(talk(u) for u in people))
    load.wall_s = time.perf_counter() - began
    return load


async def open_loop(people: list[User], rate: float, seconds: float) -> Load:
    """Messages arrive at `rate`/s (Poisson), each on a conversation not waiting for a reply;
    TTFT counts from the arrival, so waiting for a free conversation counts too."""
    free: asyncio.Queue[User] = asyncio.Queue()
    for user in people:
        free.put_nowait(user)
    load = Load()
    rng = random.Random(11)

    async def arrive(arrived: float) -> None:
        user = await free.get()
        try:
            load.streams.append(await user.exchange(short_message(), started=arrived))
        finally:
            free.put_nowait(user)

    began = time.perf_counter()
    arrivals: list[asyncio.Task[None]] = []
    at = began
    while (at := at + rng.expovariate(rate)) < began + seconds:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        arrivals.append(asyncio.create_task(arrive(at)))
    await asyncio.gather(*arrivals)
    load.wall_s = time.perf_counter() - began
    return load


# --- phases ----------------------------------------------------------------------------------------


async def message_level(
    pids: dict[str, int], idle: CpuUse, count: int, seconds: float, streamed: bool
) -> dict[str, Any]:
    async with users(count, streamed) as people:
        await asyncio.gather(*(u.exchange(short_message()) for u in people))  # warm: connections, caches
        load, cpu = await measured(pids, closed_loop(people, short_message(), seconds))
    messages = len(load.streams)
    per_message = {name: s / messages * 1000 for name, s in cpu.beyond_idle(idle).items()}
    return {
        "users": count,
        "messages": messages,
        "wall_s": load.wall_s,
        "messages_per_s": messages / load.wall_s,
        **load.ttft_ms(),
        "cpu_ms_per_message": with_totals(per_message),
    }


async def token_phase(
    pids: dict[str, int], idle: CpuUse, level: dict[str, Any], seconds: float, streamed: bool
) -> dict[str, Any]:
    async with users(level["users"], streamed) as people:
        load, cpu = await measured(pids, closed_loop(people, long_message(), seconds))
    messages, tokens = len(load.streams), load.tokens
    per_message_s = {name: ms / 1000 for name, ms in level["cpu_ms_per_message"].items()}
    per_token = {name: (s - per_message_s[name] * messages) / tokens * 1e6 for name, s in cpu.beyond_idle(idle).items()}
    return {
        "users": level["users"],
        "messages": messages,
        "tokens": tokens,
        "wall_s": load.wall_s,
        "tokens_per_s": tokens / load.wall_s,
        "cpu_us_per_token": with_totals(per_token),
    }


def headline(level: dict[str, Any], tokens: dict[str, Any]) -> dict[str, float]:
    """One run's steno-side figures at one number of users (HEADLINE's order)."""
    return {
        "ms_per_message": level["cpu_ms_per_message"]["steno"],
        "us_per_token": tokens["cpu_us_per_token"]["steno"],
        "messages_per_s": level["messages_per_s"],
        "tokens_per_s": tokens["tokens_per_s"],
    }


async def repeats(
    pids: dict[str, int], idle: CpuUse, first: dict[str, float], users: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Phases 2 and 3 at `users`, until `args.repeat` runs in all (`first` is the one already done)."""
    runs = [first]
    while len(runs) < args.repeat:
        print(f"repeat {len(runs) + 1} of {args.repeat}: {users} users, 1-token then {LONG_REPLY}-token replies...")
        level = progress(await message_level(pids, idle, users, args.seconds, args.streamed))
        tokens = progress(await token_phase(pids, idle, level, args.seconds, args.streamed))
        runs.append(headline(level, tokens))
    spread = {
        name: {"median": statistics.median(values), "min": min(values), "max": max(values)}
        for name in HEADLINE
        for values in [[run[name] for run in runs]]
    }
    return {"users": users, "runs": runs, "spread": spread}


async def paced_phase(pids: dict[str, int], idle: CpuUse, count: int, seconds: float, streamed: bool) -> dict[str, Any]:
    """Phase 6: long replies at the model's own pace; their whole cost over their tokens."""
    async with users(count, streamed) as people:
        load, cpu = await measured(
            pids, closed_loop(people, long_message(settings.models["scripted"].sampling), seconds)
        )
    per_token = {name: s / load.tokens * 1e6 for name, s in cpu.beyond_idle(idle).items()}
    return {
        "users": count,
        "messages": len(load.streams),
        "tokens": load.tokens,
        "wall_s": load.wall_s,
        "tokens_per_s": load.tokens / load.wall_s,
        "cpu_us_per_token_all_in": with_totals(per_token),
    }


async def open_phase(saturation: float, fraction: float, seconds: float, streamed: bool) -> dict[str, Any]:
    rate = saturation * fraction
    async with users(int(rate * 2) + 8, streamed) as people:  # ~2 s of arrivals in flight before one waits
        load = await open_loop(people, rate, seconds)
    return {"fraction": fraction, "rate": rate, "messages": len(load.streams), **load.ttft_ms()}


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "host": platform.node(),
        "cpu": model,
        "cores": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": psutil.getloadavg(),
        "python": platform.python_version(),
    }


# --- report ------------------------------------------------------------------------------------------


def tables(report: dict[str, Any]) -> str:
    levels, tokens = report["levels"], report["tokens"]
    names = [*STENO, "steno", "triton", "client", "other"]
    lines = [
        "| users | messages/s | TTFT p50/p99 (ms) | steno CPU ms/message | triton CPU ms/message |",
        "|---|---|---|---|---|",
        *(
            f"| {r['users']} | {r['messages_per_s']:.1f} | {r['ttft_p50_ms']:.0f} / {r['ttft_p99_ms']:.0f} "
            f"| {r['cpu_ms_per_message']['steno']:.1f} | {r['cpu_ms_per_message']['triton']:.1f} |"
            for r in levels
        ),
        "",
        "| process | " + " | ".join(f"ms/message @{r['users']}" for r in levels) + f" | µs/token @{tokens['users']} |",
        "|---|" + "---|" * (len(levels) + 1),
    ]
    for name in names:
        cells = " | ".join(f"{r['cpu_ms_per_message'][name]:.1f}" for r in levels)
        label = f"**{name}**" if name == "steno" else name
        lines.append(f"| {label} | {cells} | {tokens['cpu_us_per_token'][name]:.0f} |")
    lines += [
        "",
        f"sustained: {report['saturation_messages_per_s']:.1f} messages/s (1-token replies), "
        f"{tokens['tokens_per_s']:.0f} tokens/s ({tokens['users']} users, {LONG_REPLY}-token replies)",
        *(
            f"open loop at {o['fraction']:.0%} of saturation ({o['rate']:.1f}/s, {o['messages']} messages): "
            f"TTFT p50 {o['ttft_p50_ms']:.0f} ms, p99 {o['ttft_p99_ms']:.0f} ms"
            for o in report["open_loop"]
        ),
        *spread_lines(report["repeats"]),
        *paced_lines(report.get("paced"), names),
        "idle CPU (ms/s): "
        + ", ".join(f"{n} {s / report['idle_wall_s'] * 1000:.0f}" for n, s in report["idle_cpu_s"].items()),
    ]
    return "\n".join(lines)


def spread_lines(repeated: dict[str, Any]) -> list[str]:
    """The repeats' table: each run, then the median and range of each figure."""
    runs, spread = repeated["runs"], repeated["spread"]
    if len(runs) < 2:
        return []

    def row(label: object, cells: dict[str, str]) -> str:
        return f"| {label} | " + " | ".join(cells.values()) + " |"

    def figures(values: dict[str, float]) -> dict[str, str]:
        return {name: format(values[name], spec) for name, spec in HEADLINE.items()}

    lows = figures({name: spread[name]["min"] for name in HEADLINE})
    highs = figures({name: spread[name]["max"] for name in HEADLINE})
    return [
        "",
        f"| run ({repeated['users']} users) | steno CPU ms/message | steno CPU µs/token | messages/s | tokens/s |",
        "|---|---|---|---|---|",
        *(row(number, figures(run)) for number, run in enumerate(runs, 1)),
        row("**median**", figures({name: spread[name]["median"] for name in HEADLINE})),
        row("range", {name: f"{lows[name]}-{highs[name]}" for name in HEADLINE}),
        "",
    ]


def paced_lines(paced: dict[str, Any] | None, names: list[str]) -> list[str]:
    """Phase 6's table: each process's CPU a token, all in, at the model's pace."""
    if paced is None:
        return []
    cost = paced["cpu_us_per_token_all_in"]
    return [
        f"at a GPU's pace ({paced['users']} users, {LONG_REPLY}-token replies, "
        f"{paced['tokens_per_s']:.0f} tokens/s), CPU µs a token, all in:",
        "| " + " | ".join(names) + " |",
        "|" + "---|" * len(names),
        "| " + " | ".join(f"{cost[name]:.0f}" for name in names) + " |",
        "",
    ]


def busy_when_idle(idle: CpuUse) -> list[str]:
    """steno's processes that were busy in the idle window: other clients of the shared stack,
    whose work the subtraction then takes out of (or leaves in) every later phase."""
    rates = {
        name: idle.seconds[name] / idle.wall_s for name in ("api", "processors", "bridge", "projections", "triton")
    }
    return sorted(name for name, rate in rates.items() if rate > IDLE_LIMIT)


def progress(phase: dict[str, Any]) -> dict[str, Any]:
    """Print a phase's figures as it ends: a run cut short (a process killed under it) still tells."""
    print(
        "  " + json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in phase.items() if k[:3] != "cpu"})
    )
    return phase


async def warm_up(pids: dict[str, int], count: int, max_seconds: float, streamed: bool) -> list[float]:
    """Unmeasured load until the stack's CPU per message stops falling: the JVMs (Kafka,
    Cassandra) compile their hot paths for minutes after a start (Kafka's CPU per message fell
    from 23 to 4.7 ms over its first 90 s of load here), and that compiler time would otherwise
    be charged to the first phases. Short replies in windows of WARMUP_WINDOW_S until
    STEADY_WINDOWS in a row come no more than 5 % below the best before them, i.e. the cost
    stopped falling (a window above it is noise, not compilation; or `max_seconds` pass), then one
    window of long replies for the token path. Returns each window's steno-side ms/message."""
    print(f"warming up: {count} users until CPU per message is steady (at most {max_seconds:g} s)...", flush=True)
    windows: list[float] = []
    steady = 0
    began = time.perf_counter()
    async with users(count, streamed) as people:
        while steady < STEADY_WINDOWS and time.perf_counter() - began < max_seconds:
            load, cpu = await measured(pids, closed_loop(people, short_message(), WARMUP_WINDOW_S))
            per_message = sum(cpu.seconds[name] for name in STENO) / max(1, len(load.streams)) * 1000
            steady = steady + 1 if windows and per_message > min(windows) * 0.95 else 0
            windows.append(per_message)
            print(f"  warm-up window {len(windows)}: {per_message:.1f} ms/message (idle included)", flush=True)
        await closed_loop(people, long_message(), WARMUP_WINDOW_S)
    return windows


async def main(args: argparse.Namespace) -> None:
    pids = root_pids()
    report: dict[str, Any] = {"command": " ".join(["python -m benchmarks.capacity", *sys.argv[1:]])}
    report["machine"] = machine()
    print(f"{report['command']}\n{report['machine']}", flush=True)
    if args.warmup_seconds:
        report["warmup_ms_per_message"] = await warm_up(pids, args.token_users, args.warmup_seconds, args.streamed)
    print(f"idle for {args.idle_seconds:g} s...", flush=True)
    _, idle = await measured(pids, asyncio.sleep(args.idle_seconds))
    report |= {"idle_wall_s": idle.wall_s, "idle_cpu_s": idle.seconds}
    report["levels"] = []
    for count in args.users:
        print(f"{count} users, 1-token replies, {args.seconds:g} s...", flush=True)
        report["levels"].append(progress(await message_level(pids, idle, count, args.seconds, args.streamed)))
    saturation = max(r["messages_per_s"] for r in report["levels"])
    report["saturation_messages_per_s"] = saturation
    level = next((r for r in report["levels"] if r["users"] == args.token_users), report["levels"][-1])
    print(f"{level['users']} users, {LONG_REPLY}-token replies, {args.seconds:g} s...", flush=True)
    report["tokens"] = progress(await token_phase(pids, idle, level, args.seconds, args.streamed))
    report["repeats"] = await repeats(pids, idle, headline(level, report["tokens"]), level["users"], args)
    report["open_loop"] = []
    for fraction in (0.5, 0.9):
        print(f"open loop at {fraction:.0%} of {saturation:.1f} messages/s, {args.seconds:g} s...", flush=True)
        report["open_loop"].append(progress(await open_phase(saturation, fraction, args.seconds, args.streamed)))
    if args.paced_users:
        print(
            f"{args.paced_users} users, {LONG_REPLY}-token replies at the model's pace, {args.seconds:g} s...",
            flush=True,
        )
        report["paced"] = progress(await paced_phase(pids, idle, args.paced_users, args.seconds, args.streamed))
    restarted = sorted(name for name, pid in root_pids().items() if pids[name] != pid)
    report["restarted_during_run"] = restarted
    print(tables(report))
    if restarted:
        print(f"WARNING: restarted during the run (figures unreliable): {', '.join(restarted)}")
    report["busy_when_idle"] = busy_when_idle(idle)
    if report["busy_when_idle"]:
        print(f"WARNING: not idle before the load (someone else is using the stack): {report['busy_when_idle']}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS}")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4, 16, 64], help="closed-loop users, per level")
    parser.add_argument("--token-users", type=int, default=64, help="users in the long-reply phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each loaded phase")
    parser.add_argument(
        "--warmup-seconds", type=float, default=240.0, help="most unmeasured load before measuring; 0: none"
    )
    parser.add_argument(
        "--streamed",
        action="store_true",
        help="each reply read in its POST's response (Accept: text/event-stream) instead of a second request",
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs in all of the top level's messages and tokens (median, range)"
    )
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="length of the idle window")
    parser.add_argument(
        "--paced-users", type=int, default=16, help="users in the phase at the model's pace (a GPU's); 0: none"
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(arguments()))
