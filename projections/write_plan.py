"""In what order, and grouped how, a batch of events is written to the history view.

Each conversation's events are cut into segments. A run of events is one segment, written as one
unlogged batch: one request to Cassandra, whose requests cost it more CPU than the rows in them.
The segment's turn rows share the conversation's partition, so Cassandra applies them atomically
and in isolation (a reader sees all of them or none); its rows of other tables (the conversation,
its listing, a response's row) are other partitions, each applied on its own as before. A
deletion is a segment of its own, as it reads what it deletes.

A segment is also cut before it would hold more than MAX_SEGMENT_BYTES of rows (as the caller
weighs them): Cassandra refuses a batch of several partitions above its batch_size_fail_threshold
(50 KiB by default), and a batch of a replay or of a projection catching up can hold many long
turns of one conversation.

Step k holds the k-th segment of every conversation. Steps run one after another, so each
conversation's writes land in log order, and the segments of a step, all of different
conversations, run at once. Readers rely on that order: a history that holds a message holds
every earlier turn of its conversation (`stream_processors.conversation`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from schemas.events import ConversationDeleted, Event

MAX_SEGMENT = 100  # events per segment
MAX_SEGMENT_BYTES = 40 * 1024  # under Cassandra's batch_size_fail_threshold (50 KiB), with room for its own reckoning

Segment = list[int]  # positions in the batch, in log order, of one conversation's events


def steps(events: Sequence[Event], weigh: Callable[[Event], int]) -> list[list[Segment]]:
    """The batch's segments, step by step (see the module docstring); `weigh`: the bytes an
    event's rows add to a batch."""
    by_conversation: dict[str, list[Segment]] = {}
    open_bytes: dict[str, int] = {}  # each conversation's last segment, weighed
    for i, event in enumerate(events):
        segments = by_conversation.setdefault(event.conversation_id, [])
        weight = weigh(event)
        joined = open_bytes.get(event.conversation_id, 0) + weight
        if segments and _open_to(segments[-1], joined, event, events):
            segments[-1].append(i)
            open_bytes[event.conversation_id] = joined
        else:
            segments.append([i])
            open_bytes[event.conversation_id] = weight
    depth = max((len(segments) for segments in by_conversation.values()), default=0)
    return [[segments[k] for segments in by_conversation.values() if k < len(segments)] for k in range(depth)]


def _open_to(segment: Segment, joined_bytes: int, event: Event, events: Sequence[Event]) -> bool:
    """Whether `event` may join the segment (which would then weigh `joined_bytes`)."""
    return not (
        len(segment) == MAX_SEGMENT
        or joined_bytes > MAX_SEGMENT_BYTES
        or isinstance(events[segment[0]], ConversationDeleted)
        or isinstance(event, ConversationDeleted)
    )
