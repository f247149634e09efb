"""A store outage answers 503 with Retry-After, in the native and in OpenAI's error shape."""

from __future__ import annotations

import httpx
import redis.exceptions
from cassandra.cluster import NoHostAvailable
from fastapi import APIRouter, FastAPI

from ingest_api import store_outage
from ingest_api.openai_api.errors import OpenAIRoute


def app_failing_with(exc: Exception) -> FastAPI:
    app = FastAPI()
    openai = APIRouter(route_class=OpenAIRoute)

    async def fail() -> None:
        raise exc

    app.add_api_route("/native", fail)
    openai.add_api_route("/openai", fail)
    app.include_router(openai)
    store_outage.install(app)
    return app


async def get(app: FastAPI, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        return await client.get(path)


async def test_a_redis_outage_is_a_503_to_retry() -> None:
    response = await get(app_failing_with(redis.exceptions.ConnectionError("refused")), "/native")
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(store_outage.RETRY_AFTER_S)
    assert "ConnectionError" in response.json()["detail"]


async def test_a_cassandra_outage_on_an_openai_route_is_a_503_in_openais_shape() -> None:
    response = await get(app_failing_with(NoHostAvailable("none", {})), "/openai")
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(store_outage.RETRY_AFTER_S)
    assert response.json()["error"]["type"] == "server_error"


async def test_a_body_that_is_not_utf8_is_a_400_in_openais_shape() -> None:
    """FastAPI reports an undecodable body with Starlette's HTTPException, not its own subclass."""
    app = FastAPI()
    openai = APIRouter(route_class=OpenAIRoute)

    async def create(body: dict[str, str]) -> dict[str, str]:
        return body

    openai.add_api_route("/openai", create, methods=["POST"])
    app.include_router(openai)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        response = await client.post("/openai", content=b"\x9c$)\\", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
