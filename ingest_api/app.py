"""The steno HTTP API: REST for conversations, SSE for replies, the OpenAI-compatible API, the chat page."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from infra.settings import settings
from ingest_api import (
    auth,
    chat_page,
    conversation_feed,
    conversations,
    health,
    login,
    regeneration,
    responses,
    store_outage,
)
from ingest_api.openai_api import chat_completions, models, responses_api, unserved
from ingest_api.request_ids import RequestIds
from ingest_api.request_limits import RequestLimits
from ingest_api.services import lifespan

TELEMETRY_OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app() -> FastAPI:
    auth.require_safe_secret(settings.api.host)
    telemetry = None if settings.api.fastapi_telemetry else TELEMETRY_OFF
    app = FastAPI(title="steno", version="0.1.0", lifespan=lifespan, telemetry=telemetry)
    app.include_router(health.router)
    app.include_router(login.router)
    app.include_router(conversations.router)
    app.include_router(conversation_feed.router)
    # OpenAI's response routes first: their ids (resp_...) are matched before the native /{id} routes.
    for openai_router in (models.router, chat_completions.router, responses_api.router):
        app.include_router(openai_router)
    app.include_router(responses.router)
    app.include_router(regeneration.router)
    app.include_router(unserved.router)
    chat_page.install(app)
    store_outage.install(app)
    app.add_middleware(RequestLimits)
    app.add_middleware(RequestIds)  # outermost: every response, errors included, carries the id
    return app
