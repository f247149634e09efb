"""What a processor has read of each conversation before its current record (design rule 3).

Context assembly must not build a prompt before the active context holds every earlier turn of
the conversation. Not knowing where those turns are, it would wait for the view to apply every
record of the partition before the message, other conversations' included. But the processor
reads the whole partition in order: for a conversation whose start it read, it has seen every
record of it since, so the view need only have applied the conversation's latest record before
the message; and when that record is the start itself (the first message of a new conversation,
and every request of the OpenAI API, which starts one each time), there are no earlier turns at
all and nothing to wait for. Waiting on the projection's write of a ConversationStarted was most
of the time a new conversation's first message spent in context assembly.

What is known holds only while the partition is read without a break: a record whose offset does
not follow the last one read (the partition reassigned, another instance having read some of it
meanwhile; a rewind) forgets the partition, and its conversations fall back to the whole-partition
bound. So does a conversation forgotten to bound memory (the least recently seen first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from infra.kafka_clients import Record

REMEMBERED_PER_PARTITION = 5_000  # conversations; one forgotten costs its messages the wider bound
STARTED = "ConversationStarted"


@dataclass(frozen=True)
class Earlier:
    """What came before a record in its conversation, as far as the reader knows."""

    covered_at: int
    """A view that applied the partition up to this offset holds every earlier record of the conversation."""
    turns: bool = True
    """False when the only earlier record is the conversation's start: there is no earlier turn."""

    @classmethod
    def unknown(cls, offset: int) -> Earlier:
        """Nothing known: any record of the partition before `offset` may belong to the conversation."""
        return cls(covered_at=offset - 1)


@dataclass(slots=True)
class _Conversation:
    latest: int  # the offset of its latest record read
    from_start: bool  # its start was read, so every record of it since was too
    turns: bool  # a record after its start was read


class _Partition:
    def __init__(self, first_offset: int) -> None:
        self.next_offset = first_offset
        self.conversations: OrderedDict[bytes, _Conversation] = OrderedDict()


class ConversationPositions:
    """Each conversation's latest record in the partitions being read, for the conversations whose
    start was read (`observe` every record of a partition, in order)."""

    def __init__(self, remembered_per_partition: int = REMEMBERED_PER_PARTITION) -> None:
        self._remembered = remembered_per_partition
        self._partitions: dict[int, _Partition] = {}

    def observe(self, record: Record, kind: str | None) -> Earlier:
        """Note the record (of event type `kind`) and return what came before it in its conversation."""
        partition = self._partitions.get(record.partition)
        if partition is None or record.offset != partition.next_offset:
            partition = self._partitions[record.partition] = _Partition(record.offset)  # a break: start again
        partition.next_offset = record.offset + 1
        if record.key is None:
            return Earlier.unknown(record.offset)
        known = partition.conversations.pop(record.key, None)
        if known is None:
            seen = _Conversation(record.offset, from_start=kind == STARTED, turns=False)
            earlier = Earlier.unknown(record.offset)
        else:
            seen = _Conversation(record.offset, known.from_start and kind != STARTED, turns=True)
            earlier = Earlier(known.latest, known.turns) if known.from_start else Earlier.unknown(record.offset)
        partition.conversations[record.key] = seen
        if len(partition.conversations) > self._remembered:
            partition.conversations.popitem(last=False)
        return earlier
