"""What an attempt that died while writing its final events left in the log.

An attempt marks its response `ending` before writing them (`inference_bridge.attempts`); one
that dies before marking it finished may have landed its ResponseCompleted (or ResponseFailed,
ResponseCancelled) and not its ResponseEnded. Its successor reads both topics' partitions of the
conversation from the mark's time on, and then only completes what is missing instead of
answering a second time (a second final event in history, a `restart` after the reply).

The partitions are read from the log, not asked of a view: the log is what the successor must
not contradict, and the projections may lag. It runs only after a bridge died mid-ending, so a
consumer is made for the occasion. Timestamps are the producers' clocks; the read starts
CLOCK_SKEW_MS before the mark, in case the bridges' clocks disagree.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from inference_bridge.topics import Topics
from infra.partition_reads import records_since
from schemas.events import (
    InferenceRequested,
    ResponseCancelled,
    ResponseCompleted,
    ResponseEnded,
    ResponseFailed,
)
from schemas.serde import UndecodableEvent, decode
from schemas.topics import Topic, partition_for

CLOCK_SKEW_MS = 5_000

Final = ResponseCompleted | ResponseFailed | ResponseCancelled


@dataclass(frozen=True)
class Landed:
    """A response's final event in the conversation log, and whether its ResponseEnded followed."""

    final: Final
    ended: bool


class FinalEvents:
    def __init__(self, topics: Topics) -> None:
        self._topics = topics

    async def landed(self, request: InferenceRequested, since_ms: int) -> Landed | None:
        """The response's final event written since `since_ms` (its bridge's clock), if any."""
        return await asyncio.to_thread(self._landed, request, since_ms - CLOCK_SKEW_MS)

    def _landed(self, request: InferenceRequested, since_ms: int) -> Landed | None:
        finals = _events_of(self._topics.conversations, request, since_ms)
        final = next((event for event in finals if isinstance(event, Final)), None)
        if final is None:
            return None
        ends = _events_of(self._topics.tokens, request, since_ms)
        return Landed(final, any(isinstance(e, ResponseEnded) and e.attempt == final.attempt for e in ends))


def _events_of(topic: Topic, request: InferenceRequested, since_ms: int) -> list[object]:
    """The response's events in its conversation's partition of `topic`, from `since_ms` to the end."""
    partition, needle = partition_for(request.conversation_id, topic), request.response_id.encode()
    found = []
    for message in records_since(topic.name, partition, since_ms, reader="steno-bridge-finals"):
        value = message.value()
        if value is None or needle not in value:
            continue  # another response's
        try:
            found.append(decode(value))
        except UndecodableEvent:
            continue
    return [event for event in found if getattr(event, "response_id", None) == request.response_id]
