"""`steno replay`: rebuild the views from the conversation log, with a progress bar and a summary.

steno replay                        re-apply the whole log to the live views (idempotent,
                                    safe while the live projection runs)
steno replay --reset                empty the live views first (stop the live projection before)
steno replay --keyspace NAME        into generation NAME (keyspace and Redis namespace), migrated first
steno replay --swap [--keyspace NAME]
                                    into a new generation, then make it live while the service
                                    keeps answering (see `projections.swap`)
--from / --to OFFSET|TIME, --conversation ID
                                    only part of the log (see `projections.log_range`); not with --swap
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from infra import migrate
from infra.process import say
from infra.settings import settings
from projections import generations
from projections.generations import Generations, SwapRefused, checked_name
from projections.log_range import Scope, parse_bound
from projections.replay import LiveRunnerError, Report, Summary, empty_views, replay
from projections.swap import SwapError, rebuild_and_swap


@dataclass(frozen=True)
class Request:
    """What the operator asked for, checked."""

    scope: Scope = Scope()
    keyspace: str | None = None
    swap: bool = False
    reset: bool = False

    @classmethod
    def of(
        cls, start: str | None, end: str | None, conversation: str | None, keyspace: str | None, swap: bool, reset: bool
    ) -> Request:
        """The request, or a ValueError that says what is wrong and what to do instead."""
        scope = Scope(
            start=None if start is None else parse_bound(start),
            end=None if end is None else parse_bound(end),
            conversation=conversation,
        )
        if swap and not scope.whole_log:
            raise ValueError("--swap rebuilds from the whole log: drop --from, --to and --conversation")
        if swap and reset:
            raise ValueError("--swap builds a new generation, there is nothing to --reset: drop one of them")
        return cls(scope, None if keyspace is None else checked_name(keyspace), swap, reset)


def run(
    start: str | None, end: str | None, conversation: str | None, keyspace: str | None, swap: bool, reset: bool
) -> None:
    """The operator's entry point (`steno replay`); exits with the reason when refused."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("cassandra").setLevel(logging.ERROR)  # protocol negotiation: nothing an operator acts on
    try:
        asyncio.run(_run(Request.of(start, end, conversation, keyspace, swap, reset)))
    except (ValueError, LiveRunnerError, SwapError, SwapRefused) as exc:
        raise SystemExit(f"replay: {exc}") from exc


async def _run(request: Request) -> None:
    async with generations.connected() as known:
        live = await known.live()
        if request.swap:
            await _swap(known, request.keyspace or _new_name(), live)
        else:
            await _replay(known, request, live)


async def _replay(known: Generations, request: Request, live: str) -> None:
    target = request.keyspace or live
    if target != live:
        await asyncio.to_thread(migrate.apply_all, target)
    projector = await known.views(target)
    if request.reset:
        await empty_views(projector, live=target == live)
        say(f"replay: generation {target} emptied")
    with progress_bar() as report:
        summary = await replay(projector, scope=request.scope, report=report)
    say(f"replay into {target}{' (live)' if target == live else ''}: {summary}")


async def _swap(known: Generations, name: str, live: str) -> None:
    say(f"replay: building generation {name} beside the live {live}")
    with progress_bar() as report:
        summary, followed = await rebuild_and_swap(known, name, report=report)
    say(f"replay into {name}: {summary}")
    say(f"replay: {name} is live (was {live}; kept, frozen: drop keyspace {live} once no longer wanted)")
    if not followed:
        say(
            f"replay: the live projection has not yet caught up with {name} after "
            f"{settings.projections.swap_catch_up_s:.0f} s: is it running? (`steno status`; `steno up` starts it)"
        )


def _new_name() -> str:
    return f"{settings.cassandra.keyspace}_{datetime.now(UTC):%Y%m%d_%H%M%S}"


class EventsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} events/s")


@contextmanager
def progress_bar() -> Iterator[Report]:
    """A progress bar on stderr (events read of the total, events/s, ETA), fed by replay's reports."""
    columns = (TextColumn("replay"), BarColumn(), MofNCompleteColumn(), EventsPerSecond(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("replay", total=None)

        def report(summary: Summary) -> None:
            progress.update(task, total=summary.total, completed=summary.read)

        yield report
