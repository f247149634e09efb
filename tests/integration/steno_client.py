"""A small client of steno's HTTP API for the end-to-end tests: REST calls and SSE reading."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from infra.settings import settings
from ingest_api.auth import issue_token
from schemas.events import new_id


@dataclass(frozen=True)
class Sse:
    event: str
    id: str
    data: dict


class StenoClient:
    """One user talking to the running API on settings.api.url."""

    def __init__(self, user: str | None = None) -> None:
        self.user = user or f"user-{new_id()}"
        self.http = httpx.AsyncClient(
            base_url=settings.api.url,
            headers={"Authorization": f"Bearer {issue_token(self.user)}"},
            timeout=httpx.Timeout(30.0),
        )
        self._last_sent: dict[str, str] = {}  # conversation id -> the id of the last message `send` sent to it

    async def close(self) -> None:
        await self.http.aclose()

    async def new_conversation(self) -> str:
        response = await self.http.post("/v1/conversations", json={})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def send(self, conversation_id: str, content: str, model: str = "scripted") -> dict:
        response = await self.post_message(conversation_id, content, model)
        assert response.status_code == 202, response.text
        return response.json()

    async def post_message(
        self, conversation_id: str, content: str, model: str = "scripted", idempotency_key: str | None = None
    ) -> httpx.Response:
        """POST the message, whatever the answer (`send` requires a 202)."""
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        url = f"/v1/conversations/{conversation_id}/messages"
        response = await self.http.post(url, json={"content": content, "model": model}, headers=headers)
        if response.status_code == 202:
            self._last_sent[conversation_id] = response.json()["message_id"]
        return response

    async def events(self, response_id: str, last_event_id: str | None = None, limit: int | None = None) -> list[Sse]:
        """Read the response's SSE stream until it closes, or until `limit` events (then disconnect)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        return await self._read_sse("GET", f"/v1/responses/{response_id}/events", limit, headers=headers)

    async def send_streamed(self, conversation_id: str, content: str, limit: int | None = None) -> list[Sse]:
        """Send a message asking for its reply in the same response (`Accept: text/event-stream`):
        its `accepted` event, then the reply's events, read like `events`."""
        url = f"/v1/conversations/{conversation_id}/messages"
        body = {"content": content, "model": "scripted"}
        return await self._read_sse("POST", url, limit, json=body)

    async def _read_sse(self, method: str, url: str, limit: int | None, **request: Any) -> list[Sse]:
        received: list[Sse] = []
        async with aconnect_sse(self.http, method, url, **request) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                received.append(Sse(sse.event, sse.id, json.loads(sse.data)))
                if limit is not None and len(received) >= limit:
                    break
        return received

    async def watch(self, conversation_id: str, heard: list[str], ready: asyncio.Event) -> None:
        """Follow the conversation's live feed until cancelled: `ready` is set once it watches, and
        each reply it announces goes into `heard` (its response id)."""
        async with aconnect_sse(self.http, "GET", f"/v1/conversations/{conversation_id}/events") as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                if sse.event == "ready":
                    ready.set()
                else:
                    heard.append(json.loads(sse.data)["response_id"])

    async def history(self, conversation_id: str) -> list[dict]:
        response = await self.http.get(f"/v1/conversations/{conversation_id}/messages")
        assert response.status_code == 200, response.text
        return response.json()

    async def settled_history(self, conversation_id: str, timeout_s: float = 10.0) -> list[dict]:
        """The history once it holds the conversation's messages and none of them is `pending`.

        History is a projection of the log: a client sees a reply end on the live stream a
        moment before the projection has applied its final event, and under load even before it
        has applied the message. So it waits for the last message this client sent to the
        conversation (the history holds every earlier turn with it), or for any message when it
        sent none: a history of the earlier exchanges alone has no pending message either.
        """
        last_sent = self._last_sent.get(conversation_id)
        async with asyncio.timeout(timeout_s):
            while True:
                messages = await self.history(conversation_id)
                holds_last = any(m["id"] == last_sent for m in messages) if last_sent else bool(messages)
                if holds_last and all(m["status"] != "pending" for m in messages):
                    return messages
                await asyncio.sleep(0.02)


def scripted(content: str, **parameters: object) -> str:
    """A message that sets its own scripted reply's sampling parameters (a slow `itl_ms`, a
    `script`, ...: see infra/models/scripted); the reply echoes `content` unless scripted."""
    return f"scripted: {json.dumps(parameters)}\n{content}"


def scripted_reply(content: str) -> str:
    """What the scripted model answers: an echo of the newest user message."""
    return f"You said: {content}"


def text_of(events: list[Sse]) -> str:
    """The reply as a client shows it: tokens joined, a `restart` discarding what came before."""
    text = ""
    for sse in events:
        if sse.event == "restart":
            text = ""
        elif sse.event == "token":
            text += sse.data["text"]
    return text


async def until(condition, timeout_s: float = 20.0) -> None:
    """Wait for an async condition to hold, polling; fails the test at the deadline."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110  (the condition is the stack's state: no Event can signal it)
            await asyncio.sleep(0.05)
