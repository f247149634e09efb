"""The conversation a prompt is built from, never missing a turn the log holds (design rule 3).

The Redis active context is fast but written by another process, so it may lag the log. It
records how far it has applied each partition: once that watermark reaches the conversation's
latest record before the user's MessageSubmitted, it has applied every earlier turn of the
conversation, and the turns older than the message (turn ids are time-ordered) are the prompt's.
Where that latest record is comes from the processor's own reading of the partition
(`stream_processors.conversation_positions`); when it does not know, the record just before the
submission (whose offset MessageAccepted carries) bounds it. When the only earlier record is the
conversation's start, there is no earlier turn and nothing is read. The submission itself need
not be applied: the new message comes from the event, and moderation and context assembly run in
one step, so waiting for the projection to apply the submission would put its Cassandra and
Redis writes on every message's way to its first token. Until the watermark is there (bounded by
`settings.context.watermark_wait_s`), or when the conversation is not cached, the Cassandra
history is read instead. History carries no watermark, but it is written in log order: a history
that holds the new message holds every earlier turn.

A projection that lags (restarting, catching up after an outage) is waited for, as long as it
takes: a prompt is never built from a stale view, and a message is never failed for lag. Only
when the cache has applied the message and history still lacks it (history is written first) is
the message known to be gone: its conversation was deleted, and no prompt is built.
"""

from __future__ import annotations

import asyncio
import logging
import time

from infra.backoff import doubling
from infra.store_errors import STORE_UNAVAILABLE, STORE_WAITS
from projections.active_context import VISIBLE, ActiveContext, turns_once_applied
from projections.history import History, Message
from projections.live import LiveContext, LiveHistory
from projections.watermark_signals import WatermarkSignals
from schemas.events import ChatTurn, MessageAccepted
from stream_processors.conversation_positions import Earlier

HISTORY_POLL_S = 0.05
HISTORY_POLL_MAX_S = 2.0  # a long wait (a projection restarting) polls the history this often

log = logging.getLogger(__name__)


class MessageGone(RuntimeError):
    """The projections applied the message, and history no longer holds it: it was deleted."""


class ConversationReader:
    def __init__(
        self,
        cache: ActiveContext | LiveContext,
        history: History | LiveHistory,
        wait_s: float,
        signals: WatermarkSignals | None = None,
    ) -> None:
        self._cache = cache
        self._history = history
        self._wait_s = wait_s
        self._signals = signals

    async def turns_through(self, accepted: MessageAccepted, partition: int, earlier: Earlier) -> list[ChatTurn]:
        """The conversation's turns, ending with the accepted message; `earlier` is what came
        before its submission in the conversation."""
        turns = await self._earlier_turns(accepted, partition, earlier) if earlier.turns else []
        return [*turns, ChatTurn(role="user", content=accepted.content)]

    async def _earlier_turns(self, accepted: MessageAccepted, partition: int, earlier: Earlier) -> list[ChatTurn]:
        cached = await self._cached_before(accepted, partition, earlier.covered_at)
        if cached is not None:
            return cached
        began, waits = time.monotonic(), doubling(HISTORY_POLL_S, HISTORY_POLL_MAX_S)
        while (
            turns := history_before(await self._history.messages(accepted.conversation_id), accepted.message_id)
        ) is None:
            if await self._cache_covers(accepted, partition):
                raise MessageGone(f"message {accepted.message_id} was applied, and its conversation deleted")
            STORE_WAITS.waiting()  # on the projections, not wedged
            if (wait := next(waits)) >= HISTORY_POLL_MAX_S:
                log.warning(
                    "waiting %.0fs so far for the projections to apply message %s (partition %d, offset %d)",
                    time.monotonic() - began,
                    accepted.message_id,
                    partition,
                    accepted.submitted_offset,
                )
            await asyncio.sleep(wait)
        return turns

    async def _cache_covers(self, accepted: MessageAccepted, partition: int) -> bool:
        try:
            return await self._cache.applied_offset(partition) >= accepted.submitted_offset
        except STORE_UNAVAILABLE:
            return False

    async def _cached_before(self, accepted: MessageAccepted, partition: int, covered_at: int) -> list[ChatTurn] | None:
        """The cached turns before the message once the cache covers the partition up to
        `covered_at`; None if it does not in time, does not hold the conversation, or cannot be reached."""
        try:
            return await turns_once_applied(
                self._cache,
                accepted.conversation_id,
                accepted.message_id,
                partition,
                covered_at,
                self._wait_s,
                self._signals,
            )
        except STORE_UNAVAILABLE as exc:
            log.warning("active context unavailable (%r): reading the history", exc)
        return None


def history_before(messages: list[Message], message_id: str) -> list[ChatTurn] | None:
    """The history's turns before the message; None while history does not hold the message.
    They are the turns the active context would show: no pending, blocked or empty ones."""
    turns: list[ChatTurn] = []
    for message in messages:
        if message.message_id == message_id:
            return turns
        if message.status in VISIBLE[message.role] and message.content:
            turns.append(ChatTurn.model_validate({"role": message.role, "content": message.content}))
    return None
