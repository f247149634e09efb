"""A response's live stream over Server-Sent Events, and cancelling it."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from json.encoder import encode_basestring_ascii  # json.dumps of a str, in C
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, status

from infra.settings import settings
from ingest_api import submission
from ingest_api.auth import User
from ingest_api.positions import LoggedEvent
from ingest_api.response_stream import response_batches
from ingest_api.services import Deps, Services
from ingest_api.sse import SseResponse, event_bytes
from schemas.events import ResponseEnded, ResponseRestarted

router = APIRouter(prefix="/v1/responses", tags=["responses"])

# How a response's ending reads to a client: SSE event name per outcome.
ENDING_EVENTS = {"completed": "done", "cancelled": "done", "failed": "error", "blocked": "blocked"}


@router.get("/{response_id}/events")
async def stream_events(
    response_id: str,
    user: User,
    deps: Deps,
    last_event_id: Annotated[str | None, Header()] = None,
    starting_after: Annotated[int | None, Query(ge=-1)] = None,
) -> SseResponse:
    """`token`, `restart`, then one of `done`/`error`/`blocked`; each `id:` is a log position.

    Reconnect with `Last-Event-ID` (or `?starting_after=`) to get exactly the events after it.
    """
    owner = await deps.ownership.check_response(response_id, user)
    after = _resume_position(last_event_id, starting_after)
    batches = response_batches(deps.feed, owner.conversation_id, response_id, after)
    return SseResponse(_as_sse(batches), ping_s=settings.api.heartbeat_s)


def live_reply(deps: Services, conversation_id: str, submitted: submission.Submitted) -> SseResponse:
    """A message's reply streamed in the response to the POST that sent it: an `accepted` event
    (its ids; no `id:`, it is not in the token log), then exactly what GET
    /v1/responses/{response_id}/events sends, so a client cut off midway reconnects there with
    the last `id:` it saw. One request a message instead of two, as OpenAI's `stream: true`."""
    ids = {"message_id": submitted.message_id, "response_id": submitted.response_id}
    batches = response_batches(deps.feed, conversation_id, submitted.response_id, None)
    accepted = event_bytes("accepted", json.dumps(ids))
    return SseResponse(_after(accepted, _as_sse(batches)), ping_s=settings.api.heartbeat_s)


@router.post("/{response_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel(response_id: str, user: User, deps: Deps) -> dict[str, str]:
    """Ask the bridge to stop; the partial text stays in history as a cancelled response."""
    owner = await deps.ownership.check_response(response_id, user)
    if deps.feed.has_ended(response_id):
        raise HTTPException(status.HTTP_409_CONFLICT, detail="the response has already finished")
    await submission.request_cancel(deps, user, owner.conversation_id, response_id)
    return {"response_id": response_id, "status": "cancelling"}


def _resume_position(last_event_id: str | None, starting_after: int | None) -> int | None:
    if last_event_id is None:
        return starting_after
    try:
        return int(last_event_id)
    except ValueError:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail=f"Last-Event-ID {last_event_id!r} is not an id this stream sent"
        ) from None


async def _after(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    yield first
    async with aclosing(rest):
        async for chunk in rest:
            yield chunk


async def _as_sse(batches: AsyncIterator[list[LoggedEvent]]) -> AsyncGenerator[bytes, None]:
    """Each batch of events as one chunk: one socket write for a burst of tokens."""
    async for batch in batches:
        chunk = b"".join(sse for item in batch if (sse := to_sse(item)) is not None)
        if chunk:
            yield chunk


def to_sse(item: LoggedEvent) -> bytes | None:
    """The client's view of a token-stream event, encoded; ResponseStarted is bookkeeping and not sent.

    A token, the one event sent per generated token, is formatted directly: the same bytes as
    `json.dumps({"seq": ..., "text": ...})` in a third of the time."""
    if item.token is not None:
        seq, text = item.token
        return b'id: %d\r\nevent: token\r\ndata: {"seq": %d, "text": %s}\r\n\r\n' % (
            item.offset,
            seq,
            encode_basestring_ascii(text).encode(),
        )
    event = item.event
    if isinstance(event, ResponseRestarted):
        return event_bytes("restart", json.dumps({"attempt": event.attempt}), item.offset)
    if isinstance(event, ResponseEnded):
        data = {"outcome": event.outcome, "finish_reason": event.finish_reason, "detail": event.detail}
        return event_bytes(ENDING_EVENTS[event.outcome], json.dumps(data), item.offset)
    return None
