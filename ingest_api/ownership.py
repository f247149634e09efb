"""Rule 8: who owns a conversation or a response, checked on every request.

Ownership never changes once written, so owners are kept in memory. The process that accepted
a write remembers its owner at once, so its own follow-up requests never wait for the projection.
It also records the owner in Redis (`steno:owner:<kind>:<id>`, for RECORD_S), alongside the write
to Kafka: behind a balancer a client's next request usually reaches another process, which asks
that record before the Cassandra view. The view lags the log, for seconds while the projection
restarts or its group rebalances (after a frozen broker, say), and asking it alone answered 404
for the conversation or reply the client had just been given. The record is a hint with a
lifetime, written at best effort: a process that finds none asks the view, waiting briefly for
it to catch up. A new conversation's creator waits until the live views have applied its start
(read-your-writes: it is listed), told by the active context's watermark, which moves just after
the projection wrote history; for PROJECTION_WAIT_S at most, as every process knows the owner
anyway.

A deletion is the one change, and every API process must know it at once, whichever took it.
The process that deletes a conversation sets a marker in Redis (`steno:deleted:<id>`) once
Kafka has the ConversationDeleted, and every check asks for it before trusting a remembered
owner: one Redis read (with the owner's record, when no owner is remembered), answered before
the projection has applied the deletion. The history
view's tombstone is the durable record: a remembered owner is asked of the view again after
OWNER_RECHECK_S, well within the marker's lifetime, so a marker lost with Redis is outlived by no
cached answer. A marker never set (the deleting process died right after Kafka's ack) is
outlived by the owner's record, RECORD_S at most after the conversation started.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from fastapi import HTTPException, status
from redis.asyncio import Redis

from infra.store_errors import STORE_UNAVAILABLE
from ingest_api.request_limits import client_left_within
from projections.active_context import WATERMARK_POLL_S
from projections.live import LiveContext, LiveHistory
from projections.watermark_signals import WatermarkSignals
from schemas.events import id_created_ms

PROJECTION_WAIT_S = 5.0
POLL_S = 0.02  # the first poll: the projection is usually this close behind
POLL_GROWTH = 2.0
MAX_POLL_S = 0.2  # polls back off to this, so a wait costs Cassandra a few dozen reads at most
CLOCK_SKEW_S = 1.0  # an id minted this far in the future may come from a process whose clock runs ahead
REMEMBERED = 100_000
OWNER_RECHECK_S = 60.0  # a remembered owner is confirmed by the history view this often: one read a minute
DELETED_MARKER_S = 24 * 3600  # how long the deletion marker outlives the deletion
DELETED = ""  # the remembered owner of a deleted conversation: nobody
RECORD_S = 600  # how long an owner's record outlives its write: far past any lag the projection recovers from

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResponseOwner:
    conversation_id: str
    user_id: str
    message_id: str


T = TypeVar("T")
V = TypeVar("V")


class _Lru(OrderedDict[str, V]):
    def remember(self, key: str, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > REMEMBERED:
            self.popitem(last=False)


def deleted_key(conversation_id: str) -> str:
    return f"steno:deleted:{conversation_id}"


def record_key(kind: str, key: str) -> str:
    return f"steno:owner:{kind}:{key}"


class Ownership:
    def __init__(self, history: LiveHistory, context: LiveContext, redis: Redis, signals: WatermarkSignals) -> None:
        self._history = history
        self._context = context
        self._redis = redis
        self._signals = signals
        self._conversations: _Lru[tuple[str, float]] = _Lru()  # id -> (owner, when the view said so)
        self._responses: _Lru[ResponseOwner] = _Lru()

    async def created(self, conversation_id: str, user_id: str, partition: int, offset: int) -> None:
        """The caller started the conversation (its start is at `offset` of the partition): return
        once the live views have applied it, so that it is listed and every process knows its owner,
        or after PROJECTION_WAIT_S with the views behind (the projection restarting, or rebalancing
        after a frozen broker). Kafka has the start under the caller's name either way, so this
        process knows the owner (the others from its record), and the conversation is listed once
        the projection catches up. Asking the view instead once answered the creator 404 for the
        conversation just started.

        The active context's watermark says when it is applied (history is written before it
        moves): one Redis read, read again when the projection publishes a move. Should Redis not
        answer, the history view is polled instead, which costs Cassandra reads.
        """
        try:
            await _applied_within(self._context, self._signals, partition, offset, PROJECTION_WAIT_S)
        except STORE_UNAVAILABLE:
            await eventually(self._history.conversation_owner, conversation_id)
        self._conversations.remember(conversation_id, (user_id, time.monotonic()))

    async def record_start(self, conversation_id: str, user_id: str) -> None:
        """Record the owner of a conversation being started, for every process (see the module)."""
        await self._record("conversation", conversation_id, user_id)

    async def record_submission(self, response_id: str, owner: ResponseOwner) -> None:
        """Record the owner of a response being submitted, for every process (see the module)."""
        await self._record(
            "response", response_id, json.dumps([owner.conversation_id, owner.user_id, owner.message_id])
        )

    def record_response(self, response_id: str, owner: ResponseOwner) -> None:
        self._responses.remember(response_id, owner)

    async def forget_conversation(self, conversation_id: str) -> None:
        """The conversation was deleted (Kafka has it): from now on it is nobody's, in every process."""
        self._conversations.remember(conversation_id, (DELETED, time.monotonic()))
        await self._redis.set(deleted_key(conversation_id), "1", ex=DELETED_MARKER_S)

    async def check_conversation(
        self, conversation_id: str, user_id: str, *, marker_checked_later: bool = False
    ) -> None:
        """Raise 404 unless the caller owns the conversation (404, not 403: ids are not disclosed).

        `marker_checked_later`: the caller asks for the deletion marker itself, in the same Redis
        round trip as its write's claim (`submission`), so a remembered owner is trusted here."""
        if await self._conversation_owner(conversation_id, ask_marker=not marker_checked_later) != user_id:
            raise _not_found("conversation", conversation_id)

    def refuse_deleted(self, conversation_id: str) -> HTTPException:
        """The conversation's deletion marker was found by another check: remembered, and a 404."""
        self._conversations.remember(conversation_id, (DELETED, time.monotonic()))
        return _not_found("conversation", conversation_id)

    async def check_response(self, response_id: str, user_id: str) -> ResponseOwner:
        owner = self._responses.get(response_id) or await self._response_owner(response_id)
        if (
            owner is None
            or owner.user_id != user_id
            or await self._conversation_owner(owner.conversation_id) != user_id
        ):
            raise _not_found("response", response_id)
        return owner

    async def _response_owner(self, response_id: str) -> ResponseOwner | None:
        """The owner recorded by the process that took the message (one Redis read, and no wait
        for the projection), else the view's, remembered either way: it never changes."""
        recorded = await self._recorded("response", response_id)
        if recorded is not None:
            owner = ResponseOwner(*json.loads(recorded))
        else:
            row = await eventually(self._history.response, response_id)
            if row is None:
                return None
            owner = ResponseOwner(row.conversation_id, row.user_id, row.message_id)
        self.record_response(response_id, owner)
        return owner

    async def _conversation_owner(self, conversation_id: str, ask_marker: bool = True) -> str | None:
        """The owner, unless the conversation was deleted: remembered; else recorded by the process
        that started it; else the view's. The deletion marker and the record are one round trip."""
        owner: str | None
        owner, checked = self._conversations.get(conversation_id, (None, 0.0))
        if owner == DELETED:
            return None
        fresh = owner is not None and time.monotonic() - checked <= OWNER_RECHECK_S
        if fresh and not ask_marker:
            return owner
        deleted, recorded = await self._redis.mget(
            deleted_key(conversation_id), record_key("conversation", conversation_id)
        )
        if deleted is not None:
            self._conversations.remember(conversation_id, (DELETED, time.monotonic()))
            return None
        if not fresh:
            owner = recorded or await eventually(self._history.conversation_owner, conversation_id)
            if owner is not None:
                self._conversations.remember(conversation_id, (owner, time.monotonic()))
        return owner

    async def _record(self, kind: str, key: str, owner: str) -> None:
        """At best effort: with Redis away the other processes ask the view, as they did before
        records, and the write the record goes with must not fail for it."""
        try:
            await self._redis.set(record_key(kind, key), owner, ex=RECORD_S)
        except STORE_UNAVAILABLE as exc:
            log.warning("the owner of %s %s is not recorded (%s): other processes ask the view", kind, key, exc)

    async def _recorded(self, kind: str, key: str) -> str | None:
        try:
            recorded: str | None = await self._redis.get(record_key(kind, key))
        except STORE_UNAVAILABLE:
            return None
        return recorded


async def eventually(lookup: Callable[[str], Awaitable[T | None]], key: str) -> T | None:
    """The projection's answer, waiting for a row only while its id is fresh enough to be in flight.

    Ids are UUIDv7, so an unknown id minted long ago is answered at once instead of after a wait,
    and so is one minted in the future (beyond clock skew): steno never minted it, and waiting
    for its mint time would hold the request (and poll Cassandra) for as long as the id says.
    The wait is at most PROJECTION_WAIT_S + CLOCK_SKEW_S, and ends when the client leaves.
    """
    minted_ms = id_created_ms(key)
    if minted_ms is None or minted_ms / 1000 > time.time() + CLOCK_SKEW_S:
        return None
    wait_s = minted_ms / 1000 + PROJECTION_WAIT_S - time.time()
    return await _polled(partial(lookup, key), wait_s)


async def _applied_within(
    context: LiveContext, signals: WatermarkSignals, partition: int, offset: int, timeout_s: float
) -> bool:
    """Whether the live views apply the partition up to `offset` within the timeout (False too
    when the client leaves: nobody is waiting). Woken by the partition's watermark signal, or
    after WATERMARK_POLL_S at most should a signal be lost."""
    deadline = time.monotonic() + timeout_s
    while True:
        moved = signals.next(partition)  # taken before the read: a move in between still wakes us
        if await context.applied_offset(partition) >= offset:
            return True
        left_s = deadline - time.monotonic()
        if left_s <= 0 or await client_left_within(min(WATERMARK_POLL_S, left_s), moved):
            return False


async def _polled(lookup: Callable[[], Awaitable[T | None]], wait_s: float) -> T | None:
    """The lookup's first answer that is not None, asked again after a pause that grows from
    POLL_S by POLL_GROWTH up to MAX_POLL_S, for `wait_s` at most; None when time is up or the
    client left."""
    deadline = time.monotonic() + wait_s
    pause_s = POLL_S
    while (found := await lookup()) is None:
        left_s = deadline - time.monotonic()
        if left_s <= 0 or await client_left_within(min(pause_s, left_s)):
            return None
        pause_s = min(pause_s * POLL_GROWTH, MAX_POLL_S)
    return found


def _not_found(kind: str, key: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no {kind} {key!r} for this user")
