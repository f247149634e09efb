"""A batch of conversation-log records into both views: the step the live runner and replay
share (one implementation, two drivers), so that a replay builds exactly the state the live
system built."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import Message

from infra import kafka_clients
from infra.store_errors import STORE_UNAVAILABLE
from projections.active_context import ActiveContext, Positioned
from projections.consuming import decode_event
from projections.history import History
from schemas.events import Event


@dataclass
class Applied:
    """What a batch did to the views."""

    events: list[Event] = field(default_factory=list)  # the events both views applied
    failed: list[tuple[Message, str]] = field(default_factory=list)  # records no view could apply, and why
    rows: int = 0  # rows the history view wrote


@dataclass
class Staged:
    """A batch whose history is written and whose cache is not yet."""

    records: list[Message]
    events: dict[int, Event] = field(default_factory=dict)  # by position in `records`: those to apply
    failed: list[tuple[Message, str]] = field(default_factory=list)
    rows: int = 0


class Projector:
    def __init__(self, history: History, context: ActiveContext) -> None:
        self.history = history
        self.context = context

    async def apply(self, records: list[Message]) -> Applied:
        """Decode the records and apply them: history first, then the context cache and its watermarks.

        That order means a watermark never covers an event the history view lacks, so a reader
        that falls back from the cache to the history view never goes back in time. Within each
        view a conversation's events take effect in log order (see `History.apply_all` and
        `ActiveContext.apply_all`). A record that cannot be decoded or that a view refuses comes
        back in `failed`, for the runner to dead-letter and replay to skip; the cache still counts
        it as applied. A store that cannot be reached raises one of STORE_UNAVAILABLE: nothing is
        lost, and the whole batch can be applied again.

        The two halves are there for replay to overlap batches: a batch's cache writes may run
        while the next batch's history is written, never before its own history is.
        """
        return await self.apply_context(await self.apply_history(records))

    async def apply_history(self, records: list[Message]) -> Staged:
        """The first half of `apply`: decode the records, write the history view."""
        staged = Staged(records)
        for i, record in enumerate(records):
            try:
                staged.events[i] = decode_event(record)
            except ValueError as exc:
                staged.failed.append((record, _reason(exc)))
        positions = list(staged.events)
        written = await self.history.apply_all(list(staged.events.values()))
        for n, error in written.failures.items():
            staged.failed.append((records[positions[n]], _reason(error)))
            del staged.events[positions[n]]
        staged.rows = written.rows
        return staged

    async def apply_context(self, staged: Staged) -> Applied:
        """The second half of `apply`, once the first is done: the cache and its watermarks."""
        records = staged.records
        positioned = [(staged.events.get(i), *kafka_clients.position(record)) for i, record in enumerate(records)]
        failed = staged.failed + await self._apply_context(positioned, records)
        return Applied(events=list(staged.events.values()), failed=failed, rows=staged.rows)

    async def _apply_context(self, positioned: list[Positioned], records: list[Message]) -> list[tuple[Message, str]]:
        """Apply the batch to the cache; if the cache refuses it, one record at a time, to find
        the records at fault (returned with the reason) and apply the others."""
        try:
            await self.context.apply_all(positioned)
            return []
        except STORE_UNAVAILABLE:
            raise
        except Exception:
            refused = []
            for item, record in zip(positioned, records, strict=True):
                try:
                    await self.context.apply_all([item])
                except STORE_UNAVAILABLE:
                    raise
                except Exception as exc:
                    refused.append((record, _reason(exc)))
            return refused


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
