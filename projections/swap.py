"""Rebuild the views into a new generation and make it live while the service keeps answering.

1. The new generation's keyspace gets every migration; its Redis namespace needs none.
2. The whole log, as it stands, is replayed into it; then what arrived meanwhile, pass after pass,
   until a pass finds little left (the live runner goes on projecting into the old generation).
3. One compare-and-set of the pointer (`projections.generations`) makes it live: every reader
   reads it on its next call, the live runner before its next batch.
4. The runner, on seeing a new generation, seeks each partition back to that generation's
   watermark, so whatever it applied to the old generation after the replay's last pass reaches
   the new one too: re-applying is safe, since every write is idempotent. The swap waits (bounded)
   until the new generation's watermarks show it.

The old generation is kept, frozen, and can be made live again the same way (a replay into it
first catches it up); drop its keyspace once no longer wanted.
"""

from __future__ import annotations

import asyncio
import time

from infra import migrate
from infra.settings import settings
from projections.generations import Generations, checked_name
from projections.projector import Projector
from projections.log_range import ends_now
from projections.replay import Report, Summary, quiet, reader, replay, replay_more
from schemas.topics import CONVERSATIONS, Topic

CLOSE_ENOUGH = 500  # a catch-up pass that read fewer records than this leaves little for the runner
MAX_PASSES = 10  # under a write rate replay cannot outrun, swap anyway: the runner catches up
FOLLOW_POLL_S = 0.1


class SwapError(RuntimeError):
    """The swap cannot start: the reason says what to do."""


async def build(
    generations: Generations, name: str, conversations: Topic = CONVERSATIONS, report: Report = quiet
) -> tuple[Projector, Summary]:
    """Fill the generation from the log, then catch up with what arrived meanwhile until little is left."""
    projector = await generations.views(name)
    summary = await replay(projector, conversations, report=report)
    for _ in range(MAX_PASSES):
        if await replay_more(projector, summary, conversations, report) < CLOSE_ENOUGH:
            break
    return projector, summary


async def rebuild_and_swap(
    generations: Generations, name: str, conversations: Topic = CONVERSATIONS, report: Report = quiet
) -> tuple[Summary, bool]:
    """Build generation `name` and make it live; returns the replay's summary and whether the
    live runner was seen bringing the last events over within `swap_catch_up_s`."""
    live = await generations.live()
    if checked_name(name) == live:
        raise SwapError(f"{name} is the live generation already: name a new one to rebuild into")
    await asyncio.to_thread(migrate.apply_all, name)
    projector, summary = await build(generations, name, conversations, report)
    await generations.swap(live, name)
    with reader() as consumer:
        at_swap = ends_now(consumer, conversations, summary.ends)
    return summary, await _followed(projector, {partition: end for partition, (_, end) in at_swap.items()})


async def _followed(projector: Projector, ends: dict[int, int]) -> bool:
    """Wait until the new generation's watermarks reach the log's ends at the swap: the runner
    has brought over what it applied to the old generation after the last pass. False if not
    within the bound (the runner is not running, or is far behind)."""
    deadline = time.monotonic() + settings.projections.swap_catch_up_s
    while time.monotonic() < deadline:
        applied = [await projector.context.applied_offset(partition) for partition in ends]
        if all(offset >= end - 1 for offset, end in zip(applied, ends.values(), strict=True)):
            return True
        await asyncio.sleep(FOLLOW_POLL_S)
    return False
