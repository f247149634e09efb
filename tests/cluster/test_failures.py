"""Failures in cluster mode, each struck mid-stream under the chaos suite's workload (22
conversations streaming plus a burst of new messages, through the balancer): one Kafka broker,
one Cassandra node, one API instance, one bridge, one Triton killed; one broker and one Triton
hung (SIGSTOP for a set time, then SIGCONT). The chaos checker judges what every
client saw against the log and history: nothing acknowledged lost or answered twice, no gap or
duplicate in a resumed stream, no garbled reply; a client sees at most a `restart` or a
reconnect. The table (with the time until a new message is answered) goes to
.stack/cluster/chaos/latest.md, the time to take over to takeover.json beside it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator

import pytest

from infra import supervisor
from infra.settings import settings
from tests.chaos.checker import Exchange, Tally
from tests.chaos.faults import Fault, freeze_server, heal, kill_server
from tests.chaos.scenario import BURST, MIX, under_fault
from tests.cluster.conftest import timeout

pytestmark = [pytest.mark.cluster, pytest.mark.integration, timeout(600)]


def kill_instance(name: str) -> Fault:
    """SIGKILL one instance of one of steno's processes (supervisord restarts it); the other
    instance of its kind takes over meanwhile."""

    def strike() -> set[int]:
        pid = supervisor.pid(name)
        assert pid is not None, f"{name} does not run: is the cluster stack up?"
        os.kill(pid, signal.SIGKILL)
        return {pid}

    return Fault(f"kill -9 {name}", strike, heal)


FAULTS = [
    kill_server("kafka-2"),
    kill_server("cassandra-2"),
    kill_instance("api-1"),
    kill_instance("bridge-1"),
    kill_server("triton-1"),
    freeze_server("kafka-2", 35.0),  # a hung broker, past the clients' request timeouts
    freeze_server("triton-1", 35.0),  # a hung model server, past the bridge's token timeouts
]


@pytest.fixture(autouse=True)
async def healthy_cluster() -> AsyncIterator[None]:
    """Each fault starts on a healthy cluster and is healed before the next, whatever happened."""
    await asyncio.to_thread(heal)
    yield
    await asyncio.to_thread(heal)


def takeover_s(exchanges: list[Exchange], fault_at: float) -> float:
    """The time to take over: the longest any client waited, after the fault, for the next event
    of its reply (a reconnect and the new owner's `restart` included). Tokens already on their
    way when the fault struck arrive first, so the first event after it says nothing."""
    waits = [
        later.at - max(earlier.at, fault_at)
        for exchange in exchanges
        for earlier, later in zip(exchange.received, exchange.received[1:], strict=False)
        if later.at > fault_at
    ]
    return round(max(waits, default=0.0), 2)


@pytest.fixture(scope="session")
def takeovers() -> Iterator[dict[str, float]]:
    found: dict[str, float] = {}
    yield found
    results = settings.stack.root / "chaos"
    results.mkdir(parents=True, exist_ok=True)
    (results / "takeover.json").write_text(json.dumps(found, indent=2) + "\n")


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name.split(",")[0].replace(" ", "-"))
async def test_a_surviving_instance_takes_over(fault: Fault, tallies: list[Tally], takeovers: dict[str, float]) -> None:
    outcome = await under_fault(fault)
    tallies.append(outcome.tally)
    takeovers[fault.name] = takeover_s(outcome.exchanges, outcome.fault_at)

    broken = [v for v in outcome.verdicts if not v.ok]
    assert not broken, f"{fault}: {len(broken)} of {outcome.tally.messages} replies went wrong:\n" + "\n".join(
        f"  {v.api} {v.response_id}: {'; '.join(v.problems)}" for v in broken
    )
    assert outcome.tally.messages > sum(MIX.values()) + BURST
    assert outcome.tally.answered_again_s is not None, f"{fault}: no new message was answered afterwards"
