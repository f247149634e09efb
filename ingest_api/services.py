"""The long-lived clients one API process holds, created at start-up and closed at shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from cassandra.cluster import Session
from fastapi import Depends, FastAPI, Request
from redis.asyncio import Redis

from infra import cassandra, garbage_collector
from infra.kafka_clients import EventProducer
from infra.settings import settings
from ingest_api.claims import ReplyClaims
from ingest_api.idempotency import IdempotencyKeys, RegenerationRecords
from ingest_api.ownership import Ownership
from ingest_api.token_feed import TokenFeed
from projections import active_context
from projections.generations import Generations
from projections.live import LiveContext, LiveHistory
from projections.watermark_signals import WatermarkSignals


@dataclass
class Services:
    redis: Redis
    session: Session
    producer: EventProducer
    feed: TokenFeed
    history: LiveHistory  # the live generation's, looked up on every read: a swap shows at once
    claims: ReplyClaims  # one reply at a time per conversation
    idempotency: IdempotencyKeys  # a message sent again under its key is the same message
    regenerations: RegenerationRecords  # ... and a regeneration asked again the same regeneration
    ownership: Ownership


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    cluster, session = cassandra.connect()
    redis_client = active_context.connect()
    generations = Generations(cluster, redis_client, settings.context, settings.cassandra.keyspace)
    history = LiveHistory(generations)
    feed = TokenFeed(settings.api.subscriber_queue)
    feed.start()
    signals = WatermarkSignals(redis_client)
    services = Services(
        redis=redis_client,
        session=session,
        producer=EventProducer(),
        feed=feed,
        history=history,
        claims=ReplyClaims(redis_client),
        idempotency=IdempotencyKeys(redis_client),
        regenerations=RegenerationRecords(redis_client),
        ownership=Ownership(history, LiveContext(generations), redis_client, signals),
    )
    app.state.services = services
    garbage_collector.freeze_startup()
    try:
        yield
    finally:
        feed.stop()
        services.producer.close()
        await signals.aclose()
        await redis_client.aclose()
        cluster.shutdown()


async def _services(request: Request) -> Services:
    """Async, like every dependency of the API's: FastAPI runs a plain `def` one in its thread
    pool, a thread hop on every request for an attribute read."""
    services: Services = request.app.state.services
    return services


Deps = Annotated[Services, Depends(_services)]
