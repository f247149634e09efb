"""The steno HTTP API: REST for conversations, SSE for replies, and the chat page."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from ingest_api import conversations, health, responses
from ingest_api.services import lifespan

STATIC = Path(__file__).parent / "static"


def create_app() -> FastAPI:
    app = FastAPI(title="steno", version="0.1.0", lifespan=lifespan)
    app.include_router(health.router)
    app.include_router(conversations.router)
    app.include_router(responses.router)

    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


app = create_app()
