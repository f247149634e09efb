"""The live terminal view of `steno analytics`: the same snapshot `/metrics` serves, redrawn each second."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table

from projections.analytics.figures import Snapshot
from projections.consuming import stopped_within

REFRESH_S = 1.0


def render(snapshot: Snapshot, title: str) -> RenderableType:
    at = datetime.fromtimestamp(snapshot.at_ms / 1000, UTC).strftime("%H:%M:%S UTC")
    return Group(f"[bold]{title}[/bold]  {at}", _traffic(snapshot), _models(snapshot), _moderation(snapshot))


def _traffic(s: Snapshot) -> Table:
    table = Table("traffic", "per minute", "total")
    table.add_row("messages", f"{s.messages_per_minute:.0f}", str(s.messages_total))
    for outcome, total in sorted(s.responses_total.items()):
        table.add_row(f"replies {outcome}", f"{s.responses_per_minute.get(outcome, 0):.0f}", str(total))
    table.add_row("active conversations", "", str(s.active_conversations))
    return table


def _models(s: Snapshot) -> Table:
    table = Table("model", "TTFT p50 (ms)", "TTFT p95 (ms)", "tok/s p50", "tok/s p95", "replies timed")
    for model in sorted(s.ttft_s.keys() | s.tokens_per_s.keys()):
        ttft, rate = s.ttft_s.get(model), s.tokens_per_s.get(model)
        table.add_row(
            model,
            f"{ttft.p50 * 1000:.0f}" if ttft else "-",
            f"{ttft.p95 * 1000:.0f}" if ttft else "-",
            f"{rate.p50:.1f}" if rate else "-",
            f"{rate.p95:.1f}" if rate else "-",
            str(ttft.samples if ttft else 0),
        )
    return table


def _moderation(s: Snapshot) -> Table:
    table = Table("blocked category", "share of recent messages", "total")
    for category, total in sorted(s.blocked_total.items(), key=lambda item: -item[1]):
        table.add_row(category, f"{s.blocked_ratio.get(category, 0.0):.1%}", str(total))
    return table


async def show(latest: Callable[[], Snapshot], title: str, stop: asyncio.Event, console: Console) -> None:
    """Redraw the figures on `console` until `stop` is set."""
    with Live(render(latest(), title), console=console, auto_refresh=False) as live:
        while not await stopped_within(stop, REFRESH_S):
            live.update(render(latest(), title), refresh=True)
