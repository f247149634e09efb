"""Context assembly: an accepted message becomes an inference request.

The prompt is the system prompt, the conversation so far (read as rule 3 requires) and the
message, fitted to the model's window less the room its reply needs, counted in its own tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

from infra.settings import ModelSettings
from schemas.events import ChatTurn, InferenceRequested, MessageAccepted
from stream_processors import context_window, tokenizers
from stream_processors.conversation import ConversationReader, MessageGone
from stream_processors.conversation_positions import Earlier


class ContextAssembler:
    def __init__(
        self,
        reader: ConversationReader,
        system_prompt: str,
        models: Mapping[str, ModelSettings],
        anchored_window: bool = False,
    ) -> None:
        """`anchored_window`: see `context_window.fit`."""
        self._reader = reader
        self._system = ChatTurn(role="system", content=system_prompt)
        self._models = models
        self._anchored_window = anchored_window

    async def request(self, accepted: MessageAccepted, partition: int, earlier: Earlier) -> InferenceRequested | None:
        """The message's inference request; None if its conversation was deleted meanwhile
        (nobody is there to answer). `earlier`: what came before its submission in the conversation."""
        model = self._models[accepted.model]
        options = accepted.options
        try:
            *history, new = await self._reader.turns_through(accepted, partition, earlier)
        except MessageGone:
            return None
        system = ChatTurn(role="system", content=options.instructions) if options.instructions else self._system
        max_tokens = min(options.max_tokens or model.max_tokens, model.max_tokens)
        prompt = context_window.fit(
            system,
            [*history, *options.context],
            new,
            budget=model.context_window - max_tokens,
            tokenizer=tokenizers.load(model),
            anchored=self._anchored_window,
        )
        return InferenceRequested(
            conversation_id=accepted.conversation_id,
            user_id=accepted.user_id,
            message_id=accepted.message_id,
            response_id=accepted.response_id,
            model=accepted.model,
            prompt=prompt.turns,
            prompt_tokens=prompt.tokens,
            max_tokens=max_tokens,
            attempt=1,
            sampling=accepted.options.sampling,
        )
