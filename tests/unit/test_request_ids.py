"""Every response carries x-request-id; an OpenAI route's bug is still a 500 in OpenAI's shape."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from ingest_api.openai_api.errors import OpenAIRoute
from ingest_api.request_ids import RequestIds

router = APIRouter(route_class=OpenAIRoute)


@router.get("/broken")
async def broken() -> None:
    raise RuntimeError("a bug")


@router.get("/fine")
async def fine() -> dict[str, str]:
    return {"ok": "yes"}


def client() -> TestClient:
    app = FastAPI()
    app.include_router(router)
    app.add_middleware(RequestIds)
    return TestClient(app, raise_server_exceptions=False)


def test_each_response_gets_its_own_id_and_a_clients_safe_id_is_kept() -> None:
    with client() as http:
        first, second = http.get("/fine"), http.get("/fine")
        kept = http.get("/fine", headers={"X-Request-Id": "proxy-123"})
        unsafe = http.get("/fine", headers={"X-Request-Id": "a b\tc"})

    assert first.headers["x-request-id"].startswith("req_")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert kept.headers["x-request-id"] == "proxy-123"
    assert unsafe.headers["x-request-id"].startswith("req_")


def test_a_bug_in_an_openai_route_is_a_500_in_openais_shape_with_the_request_id() -> None:
    with client() as http:
        response = http.get("/broken")

    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert response.headers["x-request-id"].startswith("req_")
