"""Topic names and partition counts, in one place.

Everything is keyed by conversation_id, so one conversation's events stay in one partition,
in order. Partitions are the unit of scale: a consumer group can run at most this many
active instances of a processor.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from schemas import events

PREFIX = "steno"


@dataclass(frozen=True)
class Topic:
    """A topic of the contract: what readers may expect of it (the README's tables come from here)."""

    name: str
    partitions: int
    retention_ms: int  # -1 keeps events forever
    holds: tuple[type[events.Event | events.DeadLetter], ...] = ()
    key: str = "conversation_id"

    @property
    def config(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms)}


HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

CONVERSATIONS = Topic(
    f"{PREFIX}.conversations",
    partitions=6,
    retention_ms=-1,
    holds=(
        events.ConversationStarted,
        events.ConversationRenamed,
        events.ConversationDeleted,
        events.MessageSubmitted,
        events.MessageAccepted,
        events.MessageBlocked,
        events.ResponseCompleted,
        events.ResponseFailed,
        events.ResponseCancelled,
    ),
)
INFERENCE_REQUESTS = Topic(
    f"{PREFIX}.inference-requests", partitions=6, retention_ms=7 * DAY_MS, holds=(events.InferenceRequested,)
)
TOKENS = Topic(
    f"{PREFIX}.tokens",
    partitions=6,
    retention_ms=3 * DAY_MS,
    holds=(events.ResponseStarted, events.TokenGenerated, events.ResponseRestarted, events.ResponseEnded),
)
CONTROL = Topic(f"{PREFIX}.control", partitions=6, retention_ms=7 * DAY_MS, holds=(events.GenerationCancelRequested,))
DEAD_LETTERS = Topic(
    f"{PREFIX}.dead-letters",
    partitions=1,
    retention_ms=28 * DAY_MS,
    holds=(events.DeadLetter,),
    key="the failed event's own key",
)

ALL = (CONVERSATIONS, INFERENCE_REQUESTS, TOKENS, CONTROL, DEAD_LETTERS)


def partition_for(conversation_id: str, topic: Topic) -> int:
    """The partition of a conversation's events, the same in every producer and reader.

    steno chooses partitions itself (instead of each client library's default partitioner) so
    that the API can compute where a response's token events are without asking Kafka.
    """
    return zlib.crc32(conversation_id.encode()) % topic.partitions
