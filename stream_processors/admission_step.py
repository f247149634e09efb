"""The admission step: every submitted message is moderated and, once accepted, gets its prompt.

Accepted, it becomes MessageAccepted in the conversation log and InferenceRequested for the
bridge, both from the one MessageSubmitted. Assembling the prompt in the same step, instead of in
a second agent that reads MessageAccepted back from the log, takes a Kafka round trip and a
Faust dispatch off every message's way to its first token. MessageAccepted is sent as soon as
moderation passes it, and the InferenceRequested only once Kafka has acknowledged it
(`Emit.after_acks`; the ack is usually in while the prompt is assembled), so the log never holds a
reply to a message before the message's acceptance: the history, the active context and the next
prompt read the two in that order. A prompt that cannot be built (a model no longer configured)
fails the accepted message's response visibly, with a dead letter.

A MessageAccepted without `inference_requested` was written by an older steno whose context
assembly was a separate agent: its prompt is built when it is read, so a message accepted before
an upgrade is still answered.

A block also ends the response on the token stream (ResponseEnded, outcome "blocked"), because
that is the one topic the API tails for a client waiting on its reply.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from infra.kafka_clients import Record
from schemas.events import AnyEvent, Event, MessageAccepted, MessageBlocked, MessageSubmitted, ResponseEnded
from schemas.topics import Topic
from stream_processors.context_assembly import ContextAssembler
from stream_processors.conversation_positions import Earlier
from stream_processors.moderation import Moderator
from stream_processors.processor import Emit


class AdmissionStep:
    name = "admission"
    acts_on: tuple[type[Event], ...] = (MessageSubmitted, MessageAccepted)

    def __init__(
        self, moderator: Moderator, assembler: ContextAssembler, conversations: Topic, tokens: Topic, requests: Topic
    ) -> None:
        self._moderator = moderator
        self._assembler = assembler
        self._conversations = conversations
        self._tokens = tokens
        self._requests = requests

    async def handle(self, event: AnyEvent, record: Record, earlier: Earlier) -> AsyncGenerator[Emit, None]:
        if isinstance(event, MessageAccepted):
            if not event.inference_requested:  # what came before its submission is not known here
                async for emit in self._requested(
                    event, record, Earlier.unknown(event.submitted_offset), after_acks=False
                ):
                    yield emit
            return
        if not isinstance(event, MessageSubmitted):
            return
        verdict = self._moderator.classify(event.content)
        ids = event.model_dump(include={"conversation_id", "user_id", "message_id", "response_id"})
        if verdict.blocked:
            yield Emit(
                self._conversations,
                MessageBlocked(**ids, categories=verdict.categories, scores=verdict.scores, reason=verdict.reason),
            )
            ended = ResponseEnded(
                conversation_id=event.conversation_id,
                user_id=event.user_id,
                response_id=event.response_id,
                outcome="blocked",
                detail=verdict.reason,
            )
            yield Emit(self._tokens, ended)
            return
        accepted = MessageAccepted(
            **ids,
            model=event.model,
            content=event.content,
            submitted_offset=record.offset,
            scores=verdict.scores,
            options=event.options,
            inference_requested=True,
        )
        yield Emit(self._conversations, accepted)  # on its way while the prompt is assembled
        async for emit in self._requested(accepted, record, earlier, after_acks=True):
            yield emit

    async def _requested(
        self, accepted: MessageAccepted, record: Record, earlier: Earlier, *, after_acks: bool
    ) -> AsyncGenerator[Emit, None]:
        request = await self._assembler.request(accepted, record.partition, earlier)
        if request is not None:
            yield Emit(self._requests, request, after_acks=after_acks)
