"""The steno HTTP API: REST for conversations, SSE for replies, the OpenAI-compatible API, the chat page."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from ingest_api import conversations, health, responses
from ingest_api.openai_api import chat_completions, models, responses_api
from ingest_api.services import lifespan

STATIC = Path(__file__).parent / "static"


def create_app() -> FastAPI:
    app = FastAPI(title="steno", version="0.1.0", lifespan=lifespan)
    app.include_router(health.router)
    app.include_router(conversations.router)
    # OpenAI's response routes first: their ids (resp_...) are matched before the native /{id} routes.
    for openai_router in (models.router, chat_completions.router, responses_api.router):
        app.include_router(openai_router)
    app.include_router(responses.router)

    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


app = create_app()
