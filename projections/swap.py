"""Rebuild the views into a new generation and make it live while the service keeps answering.

1. The new generation's keyspace gets every migration (its Redis namespace needs none), and the
   whole log, as it stands, is replayed into it; then what arrived meanwhile, pass after pass,
   until a pass finds little left. The live projection goes on writing the live generation.
2. `begin`: the pointer names the new generation `next`. From its next batch on, the live
   projection writes each batch to `next` first, then to the live one; on seeing `next` it seeks
   back to `next`'s watermarks, so nothing between the replay's last pass and that batch is missed.
3. One more pass brings `next` to the log's end as it is after `begin`. Any batch the projection
   applied to the live generation alone was read before `begin`, so it lies below that end: `next`
   now holds everything the live generation holds, and keeps doing so, being written first.
4. `finish`: one compare-and-set makes `next` live. Readers read it on their next call, and never
   see less than they saw before; the projection writes it alone from its next batch.

The old generation is kept, frozen, and can be made live again the same way (a replay into it
brings it up to date first); drop its keyspace once it is no longer wanted.
"""

from __future__ import annotations

import asyncio
import time

from infra import migrate
from infra.settings import settings
from projections.generations import Generations, checked_name
from projections.log_range import ends_now
from projections.projector import Projector
from projections.replay import Report, Summary, quiet, reader, replay, replay_more
from schemas.topics import CONVERSATIONS, Topic

CLOSE_ENOUGH = 500  # a catch-up pass that read fewer records leaves little for the writing-both phase
MAX_PASSES = 10  # under a write rate replay cannot outrun, go on anyway: the projection catches up
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
    live projection was seen writing the new generation up to the log's end within `swap_catch_up_s`."""
    live = await generations.live()
    if checked_name(name) == live:
        raise SwapError(f"{name} is the live generation already: name a new one to rebuild into")
    await asyncio.to_thread(migrate.apply_all, name)
    projector, summary = await build(generations, name, conversations, report)
    await generations.begin(live, name)
    try:
        await replay_more(projector, summary, conversations, report)
        await generations.finish(live, name)
    except BaseException:
        await generations.abandon(live, name)
        raise
    with reader() as consumer:
        at_swap = ends_now(consumer, conversations, summary.ends)
    return summary, await _followed(projector, {partition: end for partition, (_, end) in at_swap.items()})


async def _followed(projector: Projector, ends: dict[int, int]) -> bool:
    """Wait until the new generation's watermarks reach the log's ends at the swap: the live
    projection writes it. False if not within the bound (it is not running, or far behind)."""
    deadline = time.monotonic() + settings.projections.swap_catch_up_s
    while time.monotonic() < deadline:
        applied = [await projector.context.applied_offset(partition) for partition in ends]
        if all(offset >= end - 1 for offset, end in zip(applied, ends.values(), strict=True)):
            return True
        await asyncio.sleep(FOLLOW_POLL_S)
    return False
