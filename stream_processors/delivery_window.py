"""Records acknowledged once the events they caused are in Kafka, without waiting on each one.

Rule 2 asks only that a record's offset is committed after its effects, not that the next record
waits for them. A step that awaited each record's acks handled one record per produce round trip
per partition: a burst of messages queued behind one another's acks (100 at once took ~0.4 s to
get through moderation and context assembly). Here a record's events are sent in log order, as
before, and the record is acked (Faust commits the contiguous run of acked offsets) when Kafka
acknowledged them, while the agent already handles the next record.

A record whose events could not be delivered is never acked, and the app is stopped: it can be
retried only by reading the partition again from its committed offset, which a restarted worker
does (the supervisor restarts it). Records after it that were acked are not committed past it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

Ack = Callable[[], object]


class DeliveryWindow:
    """Acks records as their deliveries settle, with at most `limit` of them still unsettled."""

    def __init__(self, limit: int, on_failure: Callable[[BaseException], Awaitable[None]]) -> None:
        self._limit = limit
        self._on_failure = on_failure
        self._unsettled = 0
        self._room = asyncio.Event()
        self._failed: BaseException | None = None
        self._stopping: asyncio.Future[None] | None = None  # held: a task nobody holds may be collected

    @property
    def unsettled(self) -> int:
        return self._unsettled

    async def ack_after(self, delivered: asyncio.Future[Any], ack: Ack) -> None:
        """Call `ack` once `delivered` resolves. Returns at once, unless `limit` records are still
        unsettled: then once one of them settles, so a backlog waits in Kafka, not in memory."""
        while self._unsettled >= self._limit and self._failed is None:
            self._room.clear()
            await self._room.wait()
        if self._failed is not None:
            raise self._failed  # the app is stopping: nothing after the failed record is handled
        self._unsettled += 1
        delivered.add_done_callback(partial(self._settled, ack))

    def _settled(self, ack: Ack, delivered: asyncio.Future[Any]) -> None:
        self._unsettled -= 1
        self._room.set()
        failure = asyncio.CancelledError() if delivered.cancelled() else delivered.exception()
        if failure is None:
            ack()
        elif self._failed is None:
            self._failed = failure
            self._stopping = asyncio.ensure_future(self._on_failure(failure))
