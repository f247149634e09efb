"""The views as their readers see them: the live generation's, looked up on every read.

The API answers history and ownership requests through `LiveHistory`; the context assembler reads
cached turns through `LiveContext`. Each call asks `Generations` which generation is live, so a
swap reaches every reader on its next call. A wait for the cache's watermark asks again on every
poll, and reads the turns from the very generation whose watermark covered the message: the
watermark of one generation says nothing about another's turns.
"""

from __future__ import annotations

from projections.active_context import offset_read, turns_read
from projections.generations import Generations
from projections.history import Conversation, History, Message, Response
from schemas.events import ChatTurn


class LiveHistory:
    """History's read side, on the live generation."""

    def __init__(self, generations: Generations) -> None:
        self._generations = generations

    async def _history(self) -> History:
        return (await self._generations.live_views()).history

    async def conversation_owner(self, conversation_id: str) -> str | None:
        return await (await self._history()).conversation_owner(conversation_id)

    async def conversations(self, user_id: str, limit: int = 50) -> list[Conversation]:
        return await (await self._history()).conversations(user_id, limit)

    async def messages(self, conversation_id: str) -> list[Message]:
        return await (await self._history()).messages(conversation_id)

    async def response(self, response_id: str) -> Response | None:
        return await (await self._history()).response(response_id)


class LiveContext:
    """The active context's read side for prompts, on the live generation."""

    def __init__(self, generations: Generations) -> None:
        self._generations = generations

    async def turns_if_applied(
        self, conversation_id: str, before: str, partition: int, offset: int
    ) -> tuple[bool, list[ChatTurn] | None]:
        """As `ActiveContext.turns_if_applied`, on the generation live now: the watermark of one
        generation says nothing about another's turns. One round trip: the pointer is asked in it."""
        results = await self._generations.read_live(
            lambda pipe, views: views.context.read_turns(pipe, conversation_id, partition)
        )
        return turns_read(results, before, offset)

    async def applied_offset(self, partition: int) -> int:
        """As `ActiveContext.applied_offset`, on the live generation, in one round trip."""
        (applied,) = await self._generations.read_live(
            lambda pipe, views: views.context.read_applied_offset(pipe, partition)
        )
        return offset_read(applied)
