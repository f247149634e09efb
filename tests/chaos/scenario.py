"""One fault under load: conversations mid-reply, the fault, recovery, then the judgement."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from infra.settings import settings
from tests.chaos.checker import Api, Exchange, Tally, Verdict, judge, resume_delays
from tests.chaos.evidence import gather_evidence
from tests.chaos.faults import Fault, heal
from tests.chaos.unhandled import LogWatch
from tests.chaos.workload import Client, NotAcknowledged, message

MIX: dict[Api, int] = {"native": 10, "responses": 6, "chat": 6}  # 22 concurrent conversations, mid-reply at the fault
BURST = 6  # more messages sent just before the fault: still in moderation, context assembly or the bridge's queue
MID_STREAM_EVENTS = 3  # each reply has streamed this many events when the fault strikes
START_TIMEOUT_S = 60.0
CLIENT_DEADLINE_S = 120.0  # a client keeps reconnecting this long after it started (Kafka is back in ~20 s)
PROBE_PAUSE_S = 0.5


@dataclass
class Outcome:
    tally: Tally
    verdicts: list[Verdict]
    exchanges: list[Exchange]  # what each client received, for figures beyond the tally's
    fault_at: float  # time.monotonic() when the fault struck
    unhandled: list[str]  # log lines of errors nothing handled, from the fault to the judgement


async def under_fault(fault: Fault) -> Outcome:
    """Start the workload, strike mid-stream, heal, let every client finish, and judge."""
    since_ms = int(time.time() * 1000) - 5_000
    deadline = time.monotonic() + CLIENT_DEADLINE_S
    clients: list[Client] = []
    tasks: list[asyncio.Task] = []
    for api, count in MIX.items():
        for _ in range(count):
            clients.append(Client.new(api))
            tasks.append(asyncio.create_task(clients[-1].converse(message(f"c{len(tasks)}"), deadline)))
    probes: list[Client] = []
    try:
        await _until_mid_stream(clients, tasks, deadline)
        await _burst(clients, tasks, deadline)
        logs = LogWatch(settings.stack.log_dir)
        gone = await asyncio.to_thread(fault.strike)
        fault_at = time.monotonic()
        probe = asyncio.create_task(_answered_again(probes, fault_at, deadline))
        try:
            await asyncio.to_thread(fault.recover, gone)
        finally:
            answered_again_s = await probe
        _raise_unexpected(await asyncio.gather(*tasks, return_exceptions=True))
        await asyncio.to_thread(heal)
        evidence = await gather_evidence(clients + probes, since_ms)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*(c.close() for c in clients + probes))
    verdicts = [judge(*found) for found in evidence]
    exchanges: list[Exchange] = [found[0] for found in evidence]
    tally = Tally.of(fault.name, verdicts, resume_delays(exchanges, fault_at), answered_again_s)
    return Outcome(tally, verdicts, exchanges, fault_at, logs.unhandled())


async def _until_mid_stream(clients: list[Client], tasks: list[asyncio.Task], deadline: float) -> None:
    """Every reply is streaming, so the fault cuts each one mid-stream.

    The stack is shared: a client whose message was not acknowledged (another test restarting
    the API that moment) starts over, in place; one that ended after its acknowledgement, before
    any fault, is a failure of the healthy stack.
    """
    began = time.monotonic()
    refused: BaseException | None = None
    while not all(c.exchange is not None and len(c.exchange.received) >= MID_STREAM_EVENTS for c in clients):
        for i, task in enumerate(tasks):
            if task.done() and clients[i].exchange is None:
                refused = task.exception()
                await clients[i].close()
                clients[i] = Client.new(clients[i].api)
                tasks[i] = asyncio.create_task(clients[i].converse(message(f"c{i}"), deadline))
            elif task.done():
                raise AssertionError(f"before the fault, {clients[i].api} {i} ended: {task.exception()!r}")
        if time.monotonic() - began > START_TIMEOUT_S:
            slow = [c.api for c in clients if c.exchange is None or len(c.exchange.received) < MID_STREAM_EVENTS]
            raise AssertionError(
                f"{len(slow)} replies not streaming after {START_TIMEOUT_S:.0f}s: {slow}; last refusal: {refused!r}"
            )
        await asyncio.sleep(0.05)


async def _burst(clients: list[Client], tasks: list[asyncio.Task], deadline: float) -> None:
    """New messages, acknowledged just before the fault, so it finds them inside the pipeline."""
    burst = [Client.new("native") for _ in range(BURST)]
    sent = [asyncio.create_task(c.converse(message(f"b{i}"), deadline)) for i, c in enumerate(burst)]
    clients += burst
    tasks += sent
    began = time.monotonic()
    while not all(c.exchange is not None or t.done() for c, t in zip(burst, sent, strict=True)):
        if time.monotonic() - began > START_TIMEOUT_S:
            raise AssertionError(f"the burst's messages were not acknowledged in {START_TIMEOUT_S:.0f}s")
        await asyncio.sleep(0.01)


async def _answered_again(probes: list[Client], fault_at: float, deadline: float) -> float | None:
    """Seconds from the fault until a new message is answered in full; each try is a new
    conversation, and every acknowledged one is judged with the rest."""
    while time.monotonic() < deadline:
        client = Client.new("native")
        probes.append(client)
        try:
            await client.converse(message("probe", itl_ms=10, words=5), deadline)
        except (NotAcknowledged, httpx.HTTPError):
            await asyncio.sleep(PROBE_PAUSE_S)
            continue
        exchange = client.exchange
        if exchange is not None and exchange.finished and exchange.received[-1].kind == "done":
            return exchange.received[-1].at - fault_at
    return None


def _raise_unexpected(results: list[object]) -> None:
    """A client that was never acknowledged is owed nothing; any other error is the suite's bug."""
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, NotAcknowledged | httpx.HTTPError):
            raise result
