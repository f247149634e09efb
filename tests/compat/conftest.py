"""The compatibility suite: the clients people point at an OpenAI-compatible server, against the running stack.

Every HTTP exchange a test's clients have with steno goes through a recording transport; when the
test ends, every body, stream chunk and Responses stream event it saw is validated against
OpenAI's published schema (tests/openai_conformance.py), so a drift fails here before it fails a
user's typed client.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import openai
import pytest

from infra.settings import settings
from ingest_api.auth import issue_token
from tests.integration.steno_client import StenoClient, until
from tests.openai_conformance import conform

pytestmark = pytest.mark.integration
BASE_URL = f"{settings.api.url}/v1"

# (method, path pattern) -> the schema of a JSON body, and of each event of a stream
SCHEMAS: list[tuple[str, re.Pattern[str], str | None, str | None]] = [
    ("POST", re.compile(r"/v1/chat/completions"), "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse"),
    ("POST", re.compile(r"/v1/responses"), "Response", "ResponseStreamEvent"),
    ("GET", re.compile(r"/v1/responses/resp_[^/]+"), "Response", "ResponseStreamEvent"),
    ("POST", re.compile(r"/v1/responses/resp_[^/]+/cancel"), "Response", None),
    ("GET", re.compile(r"/v1/responses/resp_[^/]+/input_items"), "ResponseItemList", None),
    ("GET", re.compile(r"/v1/models"), "ListModelsResponse", None),
    ("GET", re.compile(r"/v1/models/[^/]+"), "Model", None),
    ("DELETE", re.compile(r"/v1/responses/resp_[^/]+"), None, None),  # OpenAI documents no body: "200 OK"
]


@dataclass
class Exchange:
    method: str
    path: str
    status: int
    content_type: str
    body: bytearray = field(default_factory=bytearray)


class Recorder:
    """Keeps every response body that passes through its transports, to check them afterwards."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    def _start(self, request: httpx.Request, response: httpx.Response) -> Exchange:
        exchange = Exchange(
            request.method, request.url.path, response.status_code, response.headers.get("content-type", "")
        )
        self.exchanges.append(exchange)
        return exchange

    def sync_transport(self) -> httpx.BaseTransport:
        recorder, inner = self, httpx.HTTPTransport()

        class Recording(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                response = inner.handle_request(request)
                exchange = recorder._start(request, response)
                stream = response.stream

                class Tee(httpx.SyncByteStream):
                    def __iter__(self) -> Iterator[bytes]:
                        for chunk in stream:  # type: ignore[union-attr]
                            exchange.body += chunk
                            yield chunk

                    def close(self) -> None:
                        stream.close()  # type: ignore[union-attr]

                return httpx.Response(response.status_code, headers=response.headers, stream=Tee(), request=request)

        return Recording()

    def async_transport(self) -> httpx.AsyncBaseTransport:
        recorder, inner = self, httpx.AsyncHTTPTransport()

        class Recording(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                response = await inner.handle_async_request(request)
                exchange = recorder._start(request, response)
                stream = response.stream

                class Tee(httpx.AsyncByteStream):
                    async def __aiter__(self) -> AsyncIterator[bytes]:
                        async for chunk in stream:  # type: ignore[union-attr]
                            exchange.body += chunk
                            yield chunk

                    async def aclose(self) -> None:
                        await stream.aclose()  # type: ignore[union-attr]

                return httpx.Response(response.status_code, headers=response.headers, stream=Tee(), request=request)

        return Recording()

    def check(self) -> int:
        """Validate everything recorded; returns how many objects were checked."""
        checked = 0
        for exchange in self.exchanges:
            for body, schema in _objects(exchange):
                try:
                    conform(body, schema)
                except Exception as exc:
                    raise AssertionError(f"{exchange.method} {exchange.path}: not a valid {schema}: {exc}") from exc
                checked += 1
        return checked


def _objects(exchange: Exchange) -> Iterator[tuple[object, str]]:
    """Each JSON object of the exchange with the schema it must satisfy."""
    text = exchange.body.decode()
    if exchange.status >= 400:
        yield json.loads(text), "ErrorResponse"
        return
    body_schema, event_schema = _schemas(exchange.method, exchange.path)
    if exchange.content_type.startswith("text/event-stream"):
        for line in text.splitlines():
            if line.startswith("data:") and line.removeprefix("data:").strip() != "[DONE]":
                event = json.loads(line.removeprefix("data:"))
                yield event, "ErrorResponse" if "error" in event and len(event) == 1 else str(event_schema)
    elif body_schema is not None:
        yield json.loads(text), body_schema


def _schemas(method: str, path: str) -> tuple[str | None, str | None]:
    for wanted, pattern, body, events in SCHEMAS:
        if method == wanted and pattern.fullmatch(path):
            return body, events
    raise AssertionError(f"the suite saw {method} {path}, which it has no OpenAI schema for: add it to SCHEMAS")


@pytest.fixture
async def steno() -> AsyncIterator[StenoClient]:
    """A new user, on steno's native API, to see what the OpenAI calls left in history."""
    client = StenoClient()
    yield client
    await client.close()


@pytest.fixture
def token(steno: StenoClient) -> str:
    return issue_token(steno.user)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.check()


@pytest.fixture
def http_client(recorder: Recorder) -> Iterator[httpx.Client]:
    with httpx.Client(transport=recorder.sync_transport(), timeout=60) as client:
        yield client


@pytest.fixture
async def async_http_client(recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=recorder.async_transport(), timeout=60) as client:
        yield client


@pytest.fixture
async def sdk(token: str, async_http_client: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=BASE_URL, api_key=token, max_retries=0, http_client=async_http_client)


async def only_conversation(steno: StenoClient) -> str:
    """The one conversation the test's user has, once the projection lists it."""
    conversations: list[dict[str, object]] = []

    async def listed() -> bool:
        nonlocal conversations
        conversations = (await steno.http.get("/v1/conversations")).json()
        return len(conversations) == 1

    await until(listed)
    return str(conversations[0]["id"])


async def reply_in_history(steno: StenoClient) -> str:
    """The assistant's text as history keeps it, once settled."""
    history = await steno.settled_history(await only_conversation(steno))
    return str(history[-1]["content"])
