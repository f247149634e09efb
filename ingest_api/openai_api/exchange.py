"""One OpenAI request's exchange with the pipeline: submit the message, follow its reply.

A stateless request (chat completions, a Responses call without `previous_response_id`) is
recorded as a new conversation of the caller's, so it appears in their history like any chat.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from fastapi import status

from infra.settings import settings
from ingest_api import submission
from ingest_api.openai_api.errors import OpenAIError
from ingest_api.openai_api.prompt import Prompt
from ingest_api.openai_api.reply import SHUTTING_DOWN, SHUTTING_DOWN_CODE, Delta, Ending, reply, reply_batches
from ingest_api.response_stream import response_batches, response_events
from ingest_api.services import Services
from schemas.events import id_created_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Exchange:
    conversation_id: str
    response_id: str
    model: str

    @property
    def created(self) -> int:
        """Unix seconds the reply was minted: read from its UUIDv7 id, so it never changes."""
        return (id_created_ms(self.response_id) or 0) // 1000


def check_model(model: str) -> None:
    if model not in settings.models:
        raise OpenAIError(
            status.HTTP_404_NOT_FOUND,
            f"the model {model!r} does not exist: use one of {sorted(settings.models)}",
            param="model",
            code="model_not_found",
        )


async def begin(
    deps: Services,
    user: str,
    prompt: Prompt,
    model: str,
    conversation_id: str | None = None,
    idempotency_key: str | None = None,
) -> Exchange:
    """Submit the message (in a new conversation unless one is given); returns once Kafka has it.
    Under a key an earlier request used, that request's conversation and message (`idempotency`).

    The sizes are checked first, so a request refused for its size leaves nothing in the log.
    """
    check_sizes(prompt)
    if conversation_id is None:
        started = await submission.start_conversation(deps, user, prompt.title, idempotency_key=idempotency_key)
        conversation_id = started.conversation_id
    submitted = await submission.submit_message(
        deps, user, conversation_id, prompt.content, model, prompt.options, idempotency_key
    )
    return Exchange(conversation_id, submitted.response_id, model)


def log_end_user(user: str | None, safety_identifier: str | None) -> None:
    """OpenAI's `user` / `safety_identifier`: the client's end user, logged with the request's id."""
    if user or safety_identifier:
        log.info("end user %r (safety_identifier %r)", user, safety_identifier)


def check_sizes(prompt: Prompt) -> None:
    """Refuse a message over the size of any message, or a context too large for the event that
    must carry it (OpenAI's 400 for it)."""
    submission.check_size(prompt.content)
    if prompt.size > settings.api.max_prompt_bytes:
        raise OpenAIError(
            status.HTTP_400_BAD_REQUEST,
            f"the request's text (instructions, messages or input) takes {prompt.size} bytes encoded; the limit is "
            f"{settings.api.max_prompt_bytes}: send less context (the model reads only its last "
            "few thousand tokens anyway)",
            param="messages",
            code="context_length_exceeded",
        )


def follow(deps: Services, exchange: Exchange) -> AsyncIterator[Delta | Ending]:
    """The reply from its first event: live, or from the log when it is older than the feed's memory."""
    return reply(response_events(deps.feed, exchange.conversation_id, exchange.response_id, None))


def follow_batches(deps: Services, exchange: Exchange) -> AsyncIterator[list[Delta | Ending]]:
    """`follow`, in the batches the events arrive in."""
    return reply_batches(response_batches(deps.feed, exchange.conversation_id, exchange.response_id, None))


class Interrupted(OpenAIError):
    """The API is shutting down before the reply's end: its token feed ended every wait (a 503,
    which OpenAI's SDKs retry)."""

    def __init__(self) -> None:
        super().__init__(status.HTTP_503_SERVICE_UNAVAILABLE, SHUTTING_DOWN, code=SHUTTING_DOWN_CODE)


async def until_end(deps: Services, exchange: Exchange) -> Ending:
    """The reply's ending; raises Interrupted if the API shuts down first."""
    async for item in follow(deps, exchange):
        if isinstance(item, Ending):
            return item
    raise Interrupted


async def answered(deps: Services, user: str, exchange: Exchange) -> Ending:
    """`until_end` for a client waiting on the whole reply: if the API shuts down first, the
    reply is stopped (nobody will read it) and the client told to ask again."""
    try:
        return await until_end(deps, exchange)
    except Interrupted:
        await cancel_unless_ended(deps, user, exchange, ended=False)
        raise


async def cancel_unless_ended(deps: Services, user: str, exchange: Exchange, ended: bool) -> None:
    """A client that went away (or was sent away) no longer wants the reply: stop generating it."""
    if ended or deps.feed.has_ended(exchange.response_id):
        return
    with anyio.CancelScope(shield=True):  # runs while the disconnected stream is being cancelled
        await submission.request_cancel(deps, user, exchange.conversation_id, exchange.response_id)
