"""Records acknowledged once the events they caused are in Kafka, without waiting on each one.

Rule 2 asks only that a record's offset is committed after its effects, not that the next record
waits for them. A step that awaited each record's acks handled one record per produce round trip
per partition: a burst of messages queued behind one another's acks (100 at once took ~0.4 s to
get through moderation and context assembly). Here a record's events are sent in log order, as
before, while the agent already handles the next record.

Records are acked in offset order: a record whose events are in is acked only once every record
before it in its partition is (one window per partition: the agent's actors are isolated by
partition). Faust commits the run of acked offsets that follows its last commit, but it takes a
run that starts one past that commit for one that starts at it (faust-streaming 0.15's
`Consumer._new_offset`), so a record acked before the one ahead of it would commit that one's
offset too. That lost messages: a MessageSubmitted whose InferenceRequested waited on a hung
broker was committed past, because its own MessageAccepted, the next record and one with no
events, was acked at once.

A record whose events could not be delivered is never acked, nor is any record after it, and the
app is stopped: it can be retried only by reading the partition again from its committed offset,
which a restarted worker does (the supervisor restarts it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

Ack = Callable[[], object]


class DeliveryWindow:
    """Acks one partition's records in order as their deliveries settle, with at most `limit` of
    them handed over and not yet acked."""

    def __init__(self, limit: int, on_failure: Callable[[BaseException], Awaitable[None]]) -> None:
        self._limit = limit
        self._on_failure = on_failure
        self._unacked: deque[tuple[asyncio.Future[Any], Ack]] = deque()  # in offset order
        self._room = asyncio.Event()
        self._failed: BaseException | None = None
        self._stopping: asyncio.Future[None] | None = None  # held: a task nobody holds may be collected

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    async def ack_after(self, delivered: asyncio.Future[Any], ack: Ack) -> None:
        """Call `ack` once `delivered` and every earlier record's delivery resolved. Returns at
        once, unless `limit` records are still unacked: then once one is, so a backlog waits in
        Kafka, not in memory."""
        while len(self._unacked) >= self._limit and self._failed is None:
            self._room.clear()
            await self._room.wait()
        if self._failed is not None:
            raise self._failed  # the app is stopping: nothing after the failed record is handled
        self._unacked.append((delivered, ack))
        delivered.add_done_callback(self._settled)

    def _settled(self, delivered: asyncio.Future[Any]) -> None:
        failure = asyncio.CancelledError() if delivered.cancelled() else delivered.exception()
        if failure is not None and self._failed is None:
            self._failed = failure
            self._stopping = asyncio.ensure_future(self._on_failure(failure))
        if self._failed is None:
            self._ack_delivered_run()
        self._room.set()

    def _ack_delivered_run(self) -> None:
        """Ack the records at the head whose deliveries are all in: up to one still in flight,
        or one that failed (its own callback, maybe not run yet, stops the app)."""
        while self._unacked and self._unacked[0][0].done():
            delivered, ack = self._unacked[0]
            if delivered.cancelled() or delivered.exception() is not None:
                return
            self._unacked.popleft()
            ack()
