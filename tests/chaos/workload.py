"""Concurrent conversations through the running API, each client recording every event it reads.

Three kinds of client, like real ones: the native API (POST a chat and a message, each sent again
under its idempotency key after a 503 or a dropped connection; read the SSE stream, reconnect with
`Last-Event-ID`), the Responses API (`background` + `stream`, reconnect with
`starting_after`), and chat completions (a stream that cannot be resumed: a cut one stays cut).
Every reply is a slow `scripted` echo, long enough for a fault to strike mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from infra.settings import settings
from ingest_api.auth import issue_token
from schemas.events import new_id
from tests.chaos.checker import NATIVE_ENDINGS, RESPONSES_ENDINGS, Api, Exchange, Received
from tests.integration.steno_client import scripted

ITL_MS = 100  # ~10 tokens/s: a 60-word reply streams for ~6 s
WORDS = 60
RECONNECT_PAUSE_S = 0.2  # a real client's short back-off before reconnecting
TIMEOUT = httpx.Timeout(10.0, read=30.0)  # read > the API's 15 s heartbeat: a silent stream is a dead one
RESPONSE_PREFIX, CHAT_PREFIX = "resp_", "chatcmpl-"


def message(label: str, itl_ms: int = ITL_MS, words: int = WORDS) -> str:
    """A slow scripted message whose echo names its conversation, so no two replies are alike."""
    return scripted(" ".join(f"{label}-w{i}" for i in range(words)), itl_ms=itl_ms)


@dataclass
class Client:
    """One user with one conversation, on one of the APIs."""

    api: Api
    user: str
    http: httpx.AsyncClient
    exchange: Exchange | None = None

    @classmethod
    def new(cls, api: Api) -> Client:
        user = f"chaos-{api}-{new_id()}"
        http = httpx.AsyncClient(
            base_url=settings.api.url, headers={"Authorization": f"Bearer {issue_token(user)}"}, timeout=TIMEOUT
        )
        return cls(api, user, http)

    async def converse(self, content: str, deadline: float) -> None:
        """Send one message and read its reply to the end, reconnecting where the API allows."""
        if self.api == "native":
            await self._native(content, deadline)
        elif self.api == "responses":
            await self._responses(content, deadline)
        else:
            await self._chat(content)

    async def _native(self, content: str, deadline: float) -> None:
        once = {"Idempotency-Key": new_id()}  # the chat and its message, each sent again until answered
        created = await self._posted("/v1/conversations", {}, once, deadline)
        url = f"/v1/conversations/{created['id']}/messages"
        sent = await self._posted(url, {"content": content, "model": "scripted"}, once, deadline)
        exchange = self.exchange = Exchange("native", sent["response_id"], time.monotonic())
        url = f"/v1/responses/{exchange.response_id}/events"
        await self._follow(lambda: _sse(self.http, "GET", url, headers=_last_event_id(exchange)), deadline)

    async def _posted(self, url: str, body: dict, once: dict[str, str], deadline: float) -> dict:
        """POST until answered, as a careful client does: a 503 (the write may not be stored) or a
        lost answer is sent again under the same idempotency key, which must not double it."""
        while True:
            try:
                response = await self.http.post(url, json=body, headers=once)
            except httpx.TransportError as exc:
                failure = repr(exc)
            else:
                if response.is_success:
                    return dict(response.json())
                if response.status_code != 503:
                    raise NotAcknowledged(f"POST {url}: {response.status_code} {response.text}")
                failure = f"503 {response.text}"
            if time.monotonic() > deadline:
                raise NotAcknowledged(f"POST {url}: {failure}, until the deadline")
            await asyncio.sleep(RECONNECT_PAUSE_S)

    async def _responses(self, content: str, deadline: float) -> None:
        body = {"model": "scripted", "input": content, "background": True, "stream": True}
        await self._follow(lambda: _sse(self.http, "POST", "/v1/responses", json=body), deadline)

    async def _chat(self, content: str) -> None:
        body = {"model": "scripted", "stream": True, "messages": [{"role": "user", "content": content}]}
        try:
            async with _sse(self.http, "POST", "/v1/chat/completions", json=body) as events:
                async for sse in events:
                    if self._record(sse, connection=0):
                        return
        except httpx.HTTPError:
            pass
        if self.exchange is not None:
            self.exchange.cut = True
            self.exchange.expected = frozenset({"completed", "cancelled"})  # the API may cancel a left stream

    async def _follow(self, open_stream, deadline: float) -> None:
        """Read the stream; on a drop, reconnect after the last event seen until the deadline
        (a stream kept open by heartbeats alone is given up at the deadline too)."""
        connection = 0
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(deadline - time.monotonic()), open_stream() as events:
                    async for sse in events:
                        if self._record(sse, connection):
                            return
            except (httpx.HTTPError, StreamRefused, TimeoutError):
                pass
            if self.exchange is None:
                raise NotAcknowledged("the stream broke before the API named the response")
            connection += 1
            self.exchange.connections = connection + 1
            await asyncio.sleep(RECONNECT_PAUSE_S)
            if self.api == "responses":
                open_stream = self._responses_resumer()

    def _responses_resumer(self):
        exchange = self.exchange
        assert exchange is not None
        after = exchange.last_position()
        position = -1 if after is None else after
        url = f"/v1/responses/{RESPONSE_PREFIX}{exchange.response_id}?stream=true&starting_after={position}"
        return lambda: _sse(self.http, "GET", url)

    def _record(self, sse: ServerSentEvent, connection: int) -> bool:
        """Keep one event; True once it is the stream's ending."""
        now = time.monotonic()
        if not sse.data:  # a bare `retry:` or `id:` field: no event of the reply
            return False
        if self.api == "native":
            received = Received(connection, now, sse.event, int(sse.id), json.loads(sse.data).get("text", ""))
            ended = sse.event in NATIVE_ENDINGS
        elif self.api == "responses":
            received, ended = self._responses_event(json.loads(sse.data), connection, now)
        else:
            if sse.data == "[DONE]":
                assert self.exchange is not None
                self.exchange.finished = True
                return True
            received, ended = self._chat_chunk(json.loads(sse.data), now), False
        assert self.exchange is not None
        self.exchange.received.append(received)
        if ended:
            self.exchange.finished = self.api != "chat"
        return ended and self.api != "chat"

    def _responses_event(self, data: dict, connection: int, now: float) -> tuple[Received, bool]:
        if "error" in data and "type" not in data:
            return Received(connection, now, "error"), True
        if self.exchange is None:
            response_id = data["response"]["id"].removeprefix(RESPONSE_PREFIX)
            self.exchange = Exchange("responses", response_id, now)
        kind = data["type"]
        text = data.get("delta", "") if kind == "response.output_text.delta" else ""
        return Received(connection, now, kind, data["sequence_number"], text), kind in RESPONSES_ENDINGS

    def _chat_chunk(self, data: dict, now: float) -> Received:
        if "error" in data:
            return Received(0, now, "error")
        if self.exchange is None:
            self.exchange = Exchange("chat", data["id"].removeprefix(CHAT_PREFIX), now)
        choice = data["choices"][0] if data["choices"] else {}
        delta = (choice.get("delta") or {}).get("content") or ""
        return Received(0, now, "finish" if choice.get("finish_reason") else "delta", None, delta)

    async def history(self) -> dict[str, list[dict]]:
        """Every conversation of this user (it started one), with its messages."""
        listed = await self.http.get("/v1/conversations")
        listed.raise_for_status()
        history: dict[str, list[dict]] = {}
        for conversation in listed.json():
            got = await self.http.get(f"/v1/conversations/{conversation['id']}/messages")
            got.raise_for_status()
            history[conversation["id"]] = got.json()
        return history

    async def close(self) -> None:
        await self.http.aclose()


class NotAcknowledged(Exception):
    """The API never acknowledged the message: nothing is owed to the client."""


class StreamRefused(Exception):
    """A (re)connection answered with an error status; a client retries it like a drop."""


def _last_event_id(exchange: Exchange) -> dict[str, str]:
    last = exchange.last_position()
    return {} if last is None else {"Last-Event-ID": str(last)}


@asynccontextmanager
async def _sse(http: httpx.AsyncClient, method: str, url: str, **kwargs) -> AsyncIterator[AsyncIterator]:
    async with aconnect_sse(http, method, url, **kwargs) as source:
        if source.response.status_code != 200:
            await source.response.aread()
            raise StreamRefused(f"{method} {url}: {source.response.status_code} {source.response.text[:200]}")
        yield source.aiter_sse()
