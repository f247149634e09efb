"""The context-assembly step: an accepted message becomes an inference request.

The prompt is the system prompt, the conversation so far (read as rule 3 requires) and the
message, fitted to the model's window less the room its reply needs, counted in its own tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from infra.kafka_clients import Record
from infra.settings import ModelSettings
from schemas.events import AnyEvent, ChatTurn, Event, InferenceRequested, MessageAccepted
from schemas.topics import Topic
from stream_processors import context_window, tokenizers
from stream_processors.conversation import ConversationReader, MessageGone
from stream_processors.processor import Emit


class ContextStep:
    name = "context-assembly"
    acts_on: tuple[type[Event], ...] = (MessageAccepted,)

    def __init__(
        self,
        reader: ConversationReader,
        system_prompt: str,
        models: Mapping[str, ModelSettings],
        inference_requests: Topic,
    ) -> None:
        self._reader = reader
        self._system = ChatTurn(role="system", content=system_prompt)
        self._models = models
        self._inference_requests = inference_requests

    async def handle(self, event: AnyEvent, record: Record) -> Sequence[Emit]:
        if not isinstance(event, MessageAccepted):
            return []
        model = self._models[event.model]
        options = event.options
        try:
            *history, new = await self._reader.turns_through(event, record.partition)
        except MessageGone:
            return []  # deleted while it waited: nobody is there to answer
        system = ChatTurn(role="system", content=options.instructions) if options.instructions else self._system
        max_tokens = min(options.max_tokens or model.max_tokens, model.max_tokens)
        prompt = context_window.fit(
            system,
            [*history, *options.context],
            new,
            budget=model.context_window - max_tokens,
            tokenizer=tokenizers.load(model),
        )
        request = InferenceRequested(
            conversation_id=event.conversation_id,
            user_id=event.user_id,
            message_id=event.message_id,
            response_id=event.response_id,
            model=event.model,
            prompt=prompt.turns,
            prompt_tokens=prompt.tokens,
            max_tokens=max_tokens,
            attempt=1,
            sampling=options.sampling,
        )
        return [Emit(self._inference_requests, request)]
