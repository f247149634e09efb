"""The moderation step: every submitted message is accepted or blocked, in the conversation log.

A block also ends the response on the token stream (ResponseEnded, outcome "blocked"), because
that is the one topic the API tails for a client waiting on its reply.
"""

from __future__ import annotations

from collections.abc import Sequence

from infra.kafka_clients import Record
from schemas.events import AnyEvent, Event, MessageAccepted, MessageBlocked, MessageSubmitted, ResponseEnded
from schemas.topics import Topic
from stream_processors.moderation import Moderator
from stream_processors.processor import Emit


class ModerationStep:
    name = "moderation"
    acts_on: tuple[type[Event], ...] = (MessageSubmitted,)

    def __init__(self, moderator: Moderator, conversations: Topic, tokens: Topic) -> None:
        self._moderator = moderator
        self._conversations = conversations
        self._tokens = tokens

    async def handle(self, event: AnyEvent, record: Record) -> Sequence[Emit]:
        if not isinstance(event, MessageSubmitted):
            return []
        verdict = self._moderator.classify(event.content)
        ids = event.model_dump(include={"conversation_id", "user_id", "message_id", "response_id"})
        if not verdict.blocked:
            accepted = MessageAccepted(
                **ids,
                model=event.model,
                content=event.content,
                submitted_offset=record.offset,
                scores=verdict.scores,
                options=event.options,
            )
            return [Emit(self._conversations, accepted)]
        blocked = MessageBlocked(**ids, categories=verdict.categories, scores=verdict.scores, reason=verdict.reason)
        ended = ResponseEnded(
            conversation_id=event.conversation_id,
            user_id=event.user_id,
            response_id=event.response_id,
            outcome="blocked",
            detail=verdict.reason,
        )
        return [Emit(self._conversations, blocked), Emit(self._tokens, ended)]
