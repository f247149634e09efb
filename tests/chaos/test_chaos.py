"""Every fault, each under a load of concurrent conversations mid-reply: nothing the API
acknowledged is lost or answered twice, and every client ends with history's text, resumed
without gap or duplicate; no process logs an error that nothing handled. Timings are reported in
the table, not asserted."""

from __future__ import annotations

import signal

import pytest

from tests.chaos.checker import Tally
from tests.chaos.faults import (
    Fault,
    freeze_server,
    freeze_steno,
    kill_server,
    kill_supervisor,
    no_fault,
    signal_steno,
    stop_past_session,
)
from tests.chaos.scenario import BURST, MIX, under_fault

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(600)]

FAULTS = [
    no_fault(),
    *(signal_steno(name) for name in ("api", "processors", "bridge", "projections")),
    *(signal_steno(name, signal.SIGTERM) for name in ("api", "bridge")),  # a deploy
    *(kill_server(name) for name in ("kafka", "cassandra", "redis", "triton")),
    kill_supervisor(),
    *(stop_past_session(name) for name in ("bridge", "processors", "projections")),
    freeze_steno("api", 35.0),  # past its produces' delivery timeout (30 s) and the clients' read timeout
    freeze_server("kafka", 35.0),  # past a produce's delivery timeout (30 s): sends fail, then succeed again
    *(freeze_server(name, 15.0) for name in ("cassandra", "redis")),  # past the clients' request timeouts
    freeze_server("triton", 35.0),  # a hung model server: past the bridge's token timeouts (30 s)
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name.split(",")[0].replace(" ", "-"))
async def test_what_clients_saw_matches_the_log(fault: Fault, tallies: list[Tally]) -> None:
    outcome = await under_fault(fault)
    tallies.append(outcome.tally)

    broken = [v for v in outcome.verdicts if not v.ok]
    assert not broken, f"{fault}: {len(broken)} of {outcome.tally.messages} replies went wrong:\n" + "\n".join(
        f"  {v.api} {v.response_id}: {'; '.join(v.problems)}" for v in broken
    )
    assert not outcome.unhandled, f"{fault}: errors nothing handled:\n" + "\n".join(outcome.unhandled)
    assert outcome.tally.messages > sum(MIX.values()) + BURST  # and at least one probe
    assert outcome.tally.answered_again_s is not None, f"{fault}: no new message was answered afterwards"
