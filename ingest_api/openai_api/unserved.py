"""OpenAI routes steno does not serve answer 404 in OpenAI's error shape, saying so.

Without this a client of `/v1/completions` or `/v1/embeddings` gets FastAPI's `{"detail": "Not
Found"}`, which OpenAI's SDKs report as a bare "Error code: 404". These prefixes are OpenAI's; the
native API's own paths (`/v1/conversations`, `/v1/responses/{id}/events`, ...) are not among them.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from ingest_api.openai_api.errors import OpenAIError, OpenAIRoute

SERVED = "steno serves /v1/models, /v1/chat/completions and /v1/responses"
UNSERVED = (
    "completions",
    "embeddings",
    "images",
    "audio",
    "files",
    "uploads",
    "batches",
    "fine_tuning",
    "moderations",
    "assistants",
    "threads",
    "vector_stores",
    "realtime",
    "evals",
    "containers",
    "organization",
    "chatkit",
    "videos",
)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute, include_in_schema=False)


async def unserved(request: Request) -> None:
    raise OpenAIError(
        status.HTTP_404_NOT_FOUND,
        f"{request.method} {request.url.path} is an OpenAI route steno does not serve: {SERVED}",
        code="unsupported_route",
    )


for prefix in UNSERVED:
    router.add_api_route(f"/{prefix}", unserved, methods=METHODS)
    router.add_api_route(f"/{prefix}/{{rest:path}}", unserved, methods=METHODS)
router.add_api_route("/chat/completions/{rest:path}", unserved, methods=METHODS)  # stored completions
