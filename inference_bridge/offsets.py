"""Which inference-request offsets are safe to commit while generations finish out of order.

Rule 6: a request's offset may be committed only once its final event is in the log. The bridge
runs many generations at once and a short one often finishes before a long one that arrived
earlier, so per partition the committable position is the lowest offset still in flight: a
crash then redelivers every unfinished request (and perhaps some finished ones, which the
attempt counter and idempotent projections absorb), never skips one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Partition:
    in_flight: set[int] = field(default_factory=set)
    next_offset: int = 0  # one past the highest offset started
    committed: int | None = None  # the last position handed out by `committable`

    def position(self) -> int:
        return min(self.in_flight) if self.in_flight else self.next_offset


class OffsetTracker:
    """Per partition of one topic: which offsets started, which finished, what to commit next.

    Offsets may have gaps (Kafka does not promise consecutive offsets), so only offsets that
    were started count; a commit position is always "everything below this is finished".
    """

    def __init__(self) -> None:
        self._partitions: dict[int, _Partition] = {}

    def start(self, partition: int, offset: int) -> None:
        state = self._partitions.setdefault(partition, _Partition())
        state.in_flight.add(offset)
        state.next_offset = max(state.next_offset, offset + 1)

    def finish(self, partition: int, offset: int) -> None:
        """Mark an offset done; unknown ones (e.g. of a partition since revoked) are ignored."""
        state = self._partitions.get(partition)
        if state is not None:
            state.in_flight.discard(offset)

    def committable(self) -> dict[int, int]:
        """Commit positions (next offset to read) that moved since the last call, per partition."""
        moved: dict[int, int] = {}
        for partition, state in self._partitions.items():
            position = state.position()  # never decreases: offsets start in increasing order
            if position != state.committed:
                moved[partition] = position
                state.committed = position
        return moved

    def forget(self, partition: int) -> None:
        """Drop a revoked partition: its new owner resumes from the last commit."""
        self._partitions.pop(partition, None)
