"""The long-lived clients one API process holds, created at start-up and closed at shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from infra.kafka_clients import EventProducer
from projections.active_context import ActiveContext
from projections.history import History, connect

from ingest_api.ownership import Ownership
from ingest_api.token_feed import TokenFeed


@dataclass
class Services:
    producer: EventProducer
    feed: TokenFeed
    history: History
    context: ActiveContext
    ownership: Ownership


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    session = connect()
    history = History(session)
    feed = TokenFeed()
    feed.start()
    services = Services(
        producer=EventProducer(),
        feed=feed,
        history=history,
        context=ActiveContext(),
        ownership=Ownership(history),
    )
    app.state.services = services
    try:
        yield
    finally:
        feed.stop()
        services.producer.close()
        await services.context.close()
        session.cluster.shutdown()


def _services(request: Request) -> Services:
    return request.app.state.services


Deps = Annotated[Services, Depends(_services)]
