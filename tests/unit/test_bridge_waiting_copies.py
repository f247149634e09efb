"""A request's copy that waits for its twin (the processors wrote the request twice) does not
begin once its twin's failure stops the bridge: it would number an attempt the drain abandons at
once, one of the reply's `max_attempts` (the chaos suite's frozen broker gave a reply up so). It
ends as an abandoned generation does: not committed, left to the next owner."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from inference_bridge.service import Bridge, _InFlight
from infra.settings import settings

RESPONSE_ID = "r1"


@dataclass
class Request:
    response_id: str = RESPONSE_ID


@dataclass
class Copy:
    """Stands in for a Generation: `run` begins the attempt, then ends as `outcome` says."""

    outcome: asyncio.Future[None]
    request: Request = field(default_factory=Request)
    began: bool = False

    async def run(self) -> None:
        self.began = True
        await self.outcome


async def twins(first_outcome: BaseException | None) -> tuple[Bridge, Copy, asyncio.Task[None]]:
    """A bridge running the first copy with the second waiting for it; the first then ends."""
    bridge = Bridge(settings.bridge, [], redis_url=settings.redis.url)
    first, second = Copy(asyncio.get_running_loop().create_future()), Copy(asyncio.get_running_loop().create_future())
    for offset, copy in enumerate((first, second)):
        bridge._offsets.start(0, offset)
        bridge._run_once_at_a_time(copy, _InFlight(0, offset, copy))  # type: ignore[arg-type]  # a stand-in
    waiting = bridge._by_response[RESPONSE_ID]
    await asyncio.sleep(0)  # the first begins
    if first_outcome is None:
        first.outcome.set_result(None)
        second.outcome.set_result(None)
    else:
        first.outcome.set_exception(first_outcome)
    await asyncio.wait([waiting], timeout=5)
    return bridge, second, waiting


async def test_a_copy_waiting_for_a_twin_whose_failure_stops_the_bridge_does_not_begin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "inference_bridge.service")
    bridge, second, waiting = await twins(RuntimeError("not sent: an earlier window was not acknowledged"))

    assert not second.began, "the copy numbered an attempt in a stopping bridge"
    assert bridge._error is not None
    assert waiting.cancelled()
    assert bridge._offsets.committable().get(0, 0) == 0, "nothing is committed: the next owner takes both up"
    assert "not begun" in caplog.text


async def test_a_copy_waiting_for_a_twin_that_ended_well_begins() -> None:
    bridge, second, waiting = await twins(None)

    assert bridge._error is None
    assert second.began and waiting.done() and not waiting.cancelled()
    assert bridge._offsets.committable() == {0: 2}
