"""`store=false`: an exchange that leaves history once it is answered, even if the API process that
accepted it dies before then.

The intent is written to Redis before anything reaches the log (the hash `steno:unstored`:
conversation id -> {user, since}; Redis keeps it across its own restarts in its append-only
file). The accepting process follows the reply and deletes the conversation when it ends (a
ConversationDeleted, as `DELETE` writes), then clears the intent. Every API process also sweeps
the intents every SWEEP_S: one whose reply has ended in history, or that is older than
INFLIGHT_TTL_S (its message never reached the log), is carried out by whichever process sees it,
so the deletions of a crashed accepting process are done by the others, or by itself once the
supervisor has restarted it. Done twice, a deletion changes nothing more.

The message must be in the log for the pipeline to answer it; deleting the conversation afterwards
removes it from every view and every later replay, as OpenAI's unstored responses cannot be
retrieved either. The log itself keeps it for the topic's retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI

from ingest_api import submission
from ingest_api.openai_api import exchange as pipeline
from ingest_api.openai_api.exchange import Exchange
from ingest_api.openai_api.prompt import Prompt
from ingest_api.services import Services
from projections.status import Status
from schemas.events import new_id

KEY = "steno:unstored"
SWEEP_S = 5.0

log = logging.getLogger(__name__)
_following: dict[str, asyncio.Task[None]] = {}  # conversations this process deletes when their reply ends


async def start_conversation(deps: Services, user: str, title: str) -> str:
    """A new conversation that is to be deleted once answered: the intent first, then the log."""
    conversation_id = new_id()
    intent = json.dumps({"user": user, "since": time.time()})
    await deps.redis.hset(KEY, conversation_id, intent)  # type: ignore[misc]  # redis-py: Awaitable | value (redis/redis-py#2399)
    return (await submission.start_conversation(deps, user, title, conversation_id)).conversation_id


async def begin(deps: Services, user: str, request: Prompt, model: str) -> Exchange:
    """Submit the request in a conversation that is deleted once it is answered."""
    pipeline.check_sizes(request)  # before the intent: a refused request leaves nothing anywhere
    conversation_id = await start_conversation(deps, user, request.title)
    exchange = await pipeline.begin(deps, user, request, model, conversation_id)
    forget_once_answered(deps, user, exchange)
    return exchange


def forget_once_answered(deps: Services, user: str, exchange: Exchange) -> None:
    """Delete the exchange's conversation when its reply ends (the intent is already written)."""

    async def forget() -> None:
        try:
            await pipeline.until_end(deps, exchange)
        except pipeline.Interrupted:
            return  # the process is shutting down: an API process's sweep carries the intent out
        await _forget(deps, user, exchange.conversation_id)

    task = asyncio.create_task(forget())
    _following[exchange.conversation_id] = task  # also keeps it: the loop holds tasks weakly
    task.add_done_callback(lambda _: _following.pop(exchange.conversation_id, None))


async def sweep(deps: Services) -> int:
    """Carry out the intents whose reply has ended, or that are too old to wait for; returns how many."""
    done = 0
    intents: dict[str, str] = await deps.redis.hgetall(KEY)  # type: ignore[misc]  # redis-py: Awaitable | value (redis/redis-py#2399)
    for conversation_id, raw in intents.items():
        if conversation_id in _following:
            continue
        intent = json.loads(raw)
        if time.time() - intent["since"] > submission.INFLIGHT_TTL_S or await _answered(deps, conversation_id):
            await _forget(deps, intent["user"], conversation_id)
            done += 1
    return done


@contextlib.asynccontextmanager
async def sweeping(app: FastAPI) -> AsyncIterator[None]:
    """The router's lifespan: sweep while the API serves (the services are up by then)."""
    task = asyncio.create_task(_sweep_forever(app.state.services))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _sweep_forever(deps: Services) -> None:
    while True:
        try:
            await sweep(deps)
        except Exception:  # a store that cannot be reached now: the intents wait for the next sweep
            log.warning("store=false sweep failed; retrying in %ss", SWEEP_S, exc_info=True)
        await asyncio.sleep(SWEEP_S)


async def _answered(deps: Services, conversation_id: str) -> bool:
    messages = await deps.history.messages(conversation_id)
    return any(m.reply_to is not None and m.status != Status.PENDING for m in messages)


async def _forget(deps: Services, user: str, conversation_id: str) -> None:
    await submission.delete_conversation(deps, user, conversation_id)
    await deps.redis.hdel(KEY, conversation_id)  # type: ignore[misc]  # redis-py: Awaitable | value (redis/redis-py#2399)
