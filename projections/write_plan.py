"""In what order, and grouped how, a batch of events is written to the history view.

Each conversation's events are cut into segments. A run of events is one segment, written as one
unlogged batch: one request to Cassandra, whose requests cost it more CPU than the rows in them.
The segment's turn rows share the conversation's partition, so Cassandra applies them atomically
and in isolation (a reader sees all of them or none); its rows of other tables (the conversation,
its listing, a response's row) are other partitions, each applied on its own as before. A
deletion is a segment of its own, as it reads what it deletes.

Step k holds the k-th segment of every conversation. Steps run one after another, so each
conversation's writes land in log order, and the segments of a step, all of different
conversations, run at once. Readers rely on that order: a history that holds a message holds
every earlier turn of its conversation (`stream_processors.conversation`).
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.events import ConversationDeleted, Event

MAX_SEGMENT = 100  # events per segment: keeps a batch far below Cassandra's largest mutation (16 MiB)

Segment = list[int]  # positions in the batch, in log order, of one conversation's events


def steps(events: Sequence[Event]) -> list[list[Segment]]:
    """The batch's segments, step by step (see the module docstring)."""
    by_conversation: dict[str, list[Segment]] = {}
    for i, event in enumerate(events):
        segments = by_conversation.setdefault(event.conversation_id, [])
        if not segments or _closed(segments[-1], events) or isinstance(event, ConversationDeleted):
            segments.append([i])
        else:
            segments[-1].append(i)
    depth = max((len(segments) for segments in by_conversation.values()), default=0)
    return [[segments[k] for segments in by_conversation.values() if k < len(segments)] for k in range(depth)]


def _closed(segment: Segment, events: Sequence[Event]) -> bool:
    return len(segment) == MAX_SEGMENT or isinstance(events[segment[0]], ConversationDeleted)
