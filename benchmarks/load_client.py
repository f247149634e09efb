"""The benchmarks' client of steno's native API: many users over one aiohttp session.

The load generator shares the machine with the stack, so its own CPU is taken from steno's. The
tests' `StenoClient` (httpx, one client per user) costs ~20 ms of CPU per user to create (an SSL
context each) and reads SSE in pure Python (h11, httpcore, anyio); here one session with
aiohttp's C HTTP parser serves every user, at ~50 µs of CPU per SSE token with 100 streams. Only
what the benchmarks need: start a conversation, send a message, read a reply's SSE stream, the
reply read either with a second request (POST, then GET its stream) or in the POST's own
response (`streamed`: `Accept: text/event-stream`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from infra.settings import settings
from ingest_api.auth import issue_token
from schemas.events import new_id

ENDINGS = {"done", "error", "blocked"}


@dataclass(frozen=True)
class Sse:
    event: str
    data: str


class LoadClient:
    """The HTTP session every simulated user shares; each `User` carries only its token."""

    def __init__(self, streamed: bool = False) -> None:
        self.streamed = streamed
        self.session = aiohttp.ClientSession(
            base_url=settings.api.url,
            connector=aiohttp.TCPConnector(limit=0),  # as many connections as users: no pool queueing
            timeout=aiohttp.ClientTimeout(total=None, sock_read=30),
        )

    async def close(self) -> None:
        await self.session.close()

    def user(self, name: str | None = None) -> User:
        return User(self.session, name or f"user-{new_id()}", self.streamed)


class User:
    def __init__(self, session: aiohttp.ClientSession, name: str, streamed: bool) -> None:
        self._session = session
        self._headers = {"Authorization": f"Bearer {issue_token(name)}"}
        self._streamed = streamed

    async def new_conversation(self) -> str:
        async with self._session.post("/v1/conversations", json={}, headers=self._headers) as response:
            return (await _expect(response, 201))["id"]

    async def send(self, conversation_id: str, content: str, model: str = "scripted") -> dict:
        """Submit a message; its `message_id` and `response_id`."""
        body = {"content": content, "model": model}
        path = f"/v1/conversations/{conversation_id}/messages"
        async with self._session.post(path, json=body, headers=self._headers) as response:
            return await _expect(response, 202)

    async def events(self, response_id: str) -> AsyncIterator[Sse]:
        """The reply's SSE events, up to and including its ending."""
        async for sse in _read_sse(self._session.get(f"/v1/responses/{response_id}/events", headers=self._headers)):
            yield sse

    async def tokens(self, response_id: str) -> AsyncIterator[str]:
        """The reply's token events' data, until it ends."""
        async for sse in self.events(response_id):
            if sse.event == "token":
                yield sse.data

    async def reply(self, conversation_id: str, content: str, model: str = "scripted") -> AsyncIterator[str]:
        """Send a message and read its reply's tokens' data, the client's way (`streamed` or not)."""
        if not self._streamed:
            ids = await self.send(conversation_id, content, model)
            async for token in self.tokens(ids["response_id"]):
                yield token
            return
        path = f"/v1/conversations/{conversation_id}/messages"
        headers = {**self._headers, "Accept": "text/event-stream"}
        async for sse in _read_sse(
            self._session.post(path, json={"content": content, "model": model}, headers=headers)
        ):
            if sse.event == "token":
                yield sse.data


async def _read_sse(request: Any) -> AsyncIterator[Sse]:
    """A streamed response's SSE events (`request`: the session's pending request), up to its ending."""
    async with request as response:
        if response.status != 200:
            raise RuntimeError(f"{response.method} {response.url}: {response.status} {await response.text()}")
        event, data = "message", ""
        async for raw in response.content:
            line = raw.rstrip(b"\r\n")
            if line.startswith(b"event:"):
                event = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data = line[5:].strip().decode()
            elif not line and data:
                yield Sse(event, data)
                if event in ENDINGS:
                    return
                event, data = "message", ""


async def _expect(response: aiohttp.ClientResponse, status: int) -> dict:
    if response.status != status:
        raise RuntimeError(f"{response.method} {response.url}: {response.status} {await response.text()}")
    return json.loads(await response.read())
