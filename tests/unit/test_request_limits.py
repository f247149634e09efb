"""Bad input is cheap: a body over the limit is refused before it is parsed, in the shape of the route
it was sent to; a wait for an id ends at once for an id from the future, and when the client leaves."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.types import Message

from infra.settings import settings
from ingest_api.openai_api.errors import OpenAIRoute
from ingest_api.ownership import CLOCK_SKEW_S, PROJECTION_WAIT_S, eventually
from ingest_api.request_limits import RequestLimits
from schemas.events import new_id

LIMIT = 1024
FAR_FUTURE = "ffffffff-ffff-7fff-bfff-ffffffffffff"  # a UUIDv7 whose mint time is the year 10889


class Text(BaseModel):
    text: str


class Lookups:
    """A projection that never has the row, counting how often it was asked."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, key: str) -> str | None:
        self.calls += 1
        return None


def app_with(lookups: Lookups) -> FastAPI:
    app = FastAPI()
    native, openai = APIRouter(), APIRouter(route_class=OpenAIRoute)
    handled: list[str] = []

    @native.post("/native")
    async def native_route(body: Text) -> dict:
        handled.append(body.text)
        return {}

    @openai.post("/openai")
    async def openai_route(body: Text) -> dict:
        handled.append(body.text)
        return {}

    @native.get("/owner/{key}")
    async def owner(key: str) -> dict:
        return {"found": await eventually(lookups, key)}

    app.include_router(native)
    app.include_router(openai)
    app.add_middleware(RequestLimits)
    app.state.handled = handled
    return app


@pytest.fixture(autouse=True)
def small_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings.api, "max_body_bytes", LIMIT)


def test_a_body_over_the_limit_is_refused_in_the_shape_of_its_route() -> None:
    app = app_with(Lookups())
    client = TestClient(app)
    big = {"text": "x" * LIMIT}

    native = client.post("/native", json=big)
    openai = client.post("/openai", json=big)
    fits = client.post("/native", json={"text": "hello"})

    assert native.status_code == openai.status_code == 413
    assert f"the limit is {LIMIT}" in native.json()["detail"]
    assert openai.json()["error"]["type"] == "invalid_request_error"
    assert f"the limit is {LIMIT}" in openai.json()["error"]["message"]
    assert fits.status_code == 200
    assert app.state.handled == ["hello"]


async def test_a_declared_length_over_the_limit_is_refused_without_reading_the_body() -> None:
    app = app_with(Lookups())
    reads = 0

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"{}", "more_body": True}  # a body that never ends

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"content-length", str(100 * LIMIT).encode())]
    await asyncio.wait_for(app(_scope("POST", "/native", headers), receive, send), timeout=5)

    assert sent[0]["status"] == 413
    assert reads == 0


async def test_an_id_minted_in_the_future_is_unknown_at_once() -> None:
    lookups = Lookups()
    ahead_ms = int((time.time() + 60) * 1000)  # a minute ahead: beyond any clock skew
    a_minute_ahead = str(uuid.UUID(int=(ahead_ms << 80) | (0x7 << 76) | (0x2 << 62) | 1))

    started = time.monotonic()
    for key in (FAR_FUTURE, a_minute_ahead):
        assert await eventually(lookups, key) is None
    elapsed = time.monotonic() - started

    assert lookups.calls == 0
    assert elapsed < 0.1


async def test_a_fresh_unknown_id_is_waited_for_a_bounded_time_with_few_lookups() -> None:
    lookups = Lookups()

    started = time.monotonic()
    assert await eventually(lookups, new_id()) is None
    elapsed = time.monotonic() - started

    assert PROJECTION_WAIT_S - 0.5 < elapsed < PROJECTION_WAIT_S + CLOCK_SKEW_S
    assert lookups.calls < 50  # polls back off: not one every 20 ms for 5 s


async def test_the_wait_ends_when_the_client_leaves() -> None:
    lookups = Lookups()
    app = app_with(lookups)
    received: asyncio.Queue[Message] = asyncio.Queue()
    received.put_nowait({"type": "http.request", "body": b"", "more_body": False})
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def leave_soon() -> None:
        await asyncio.sleep(0.3)
        received.put_nowait({"type": "http.disconnect"})

    leaving = asyncio.create_task(leave_soon())
    started = time.monotonic()
    await asyncio.wait_for(app(_scope("GET", f"/owner/{new_id()}", []), received.get, send), timeout=10)
    elapsed = time.monotonic() - started
    await leaving

    assert elapsed < 1.0  # not the projection's 5 s
    calls_when_done = lookups.calls
    await asyncio.sleep(0.3)
    assert lookups.calls == calls_when_done  # nothing polls after the handler returned


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
    }
