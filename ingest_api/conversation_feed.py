"""A conversation's live feed over SSE: `ready`, then `response` for each reply in progress and
each time a reply begins in it.

This is how a second tab (or device) on the same conversation shows a reply that another one
asked for: it learns the response id here and reads the reply from
/v1/responses/{id}/events like the tab that sent the message. The feed is live only, with no
resume: a client that (re)connects reads the history once `ready` came, and the history holds
every reply that ended before; the feed announces every one that had not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

from fastapi import APIRouter

from infra.settings import settings
from ingest_api.auth import User
from ingest_api.services import Deps
from ingest_api.sse import SseResponse, event_bytes
from ingest_api.token_feed import TokenFeed

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])


@router.get("/{conversation_id}/events")
async def conversation_events(conversation_id: str, user: User, deps: Deps) -> SseResponse:
    """`ready` once watching, then `response` `{"response_id"}` for each reply in progress or
    beginning while connected; heartbeats while idle."""
    await deps.ownership.check_conversation(conversation_id, user)
    return SseResponse(_new_responses(deps.feed, conversation_id), ping_s=settings.api.heartbeat_s)


async def _new_responses(feed: TokenFeed, conversation_id: str) -> AsyncGenerator[bytes, None]:
    """Ends when the watcher overflows: the client reconnects and reads the history again."""
    await feed.ready()  # `ready` is a promise that every reply beginning from now on is announced
    watcher = feed.watch(conversation_id)
    try:
        yield event_bytes("ready", "{}")
        async for item in watcher:
            yield event_bytes("response", json.dumps({"response_id": item.response_id}))
    finally:
        feed.unwatch(watcher)
