"""A batch of conversation-log records into both views: the step the live runner and replay
share (one implementation, two drivers), so that a replay builds exactly the state the live
system built."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.exceptions
from confluent_kafka import Message

from projections.active_context import ActiveContext, Positioned
from projections.consuming import decode_event
from projections.history import CASSANDRA_UNAVAILABLE, History
from schemas.events import Event

# A store that cannot be reached says nothing about the event: wait for the store, don't
# dead-letter the event. Every other failure is the event's (rule 7).
STORE_UNAVAILABLE: tuple[type[Exception], ...] = (
    *CASSANDRA_UNAVAILABLE,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


@dataclass
class Applied:
    """What a batch did to the views."""

    events: list[Event] = field(default_factory=list)  # the events both views applied
    failed: list[tuple[Message, str]] = field(default_factory=list)  # records no view could apply, and why
    rows: int = 0  # rows the history view wrote


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
        """
        failed: list[tuple[Message, str]] = []
        decoded: dict[int, Event] = {}  # by position in `records`
        for i, record in enumerate(records):
            try:
                decoded[i] = decode_event(record)
            except ValueError as exc:
                failed.append((record, _reason(exc)))
        positions = list(decoded)
        written = await self.history.apply_all(list(decoded.values()))
        for n, exc in written.failures.items():
            failed.append((records[positions[n]], _reason(exc)))
            del decoded[positions[n]]
        positioned = [(decoded.get(i), record.partition(), record.offset()) for i, record in enumerate(records)]
        failed += await self._apply_context(positioned, records)
        return Applied(events=list(decoded.values()), failed=failed, rows=written.rows)

    async def _apply_context(self, positioned: list[Positioned], records: list[Message]) -> list[tuple[Message, str]]:
        """Apply the batch to the cache; if the cache refuses it, one record at a time, to find
        the records at fault (returned with the reason) and apply the others."""
        try:
            await self.context.apply_all(positioned)
            return []
        except STORE_UNAVAILABLE:
            raise
        except Exception:  # noqa: BLE001 - rule 7: whatever an event did, the others go on
            refused = []
            for item, record in zip(positioned, records, strict=True):
                try:
                    await self.context.apply_all([item])
                except STORE_UNAVAILABLE:
                    raise
                except Exception as exc:  # noqa: BLE001
                    refused.append((record, _reason(exc)))
            return refused


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
