"""Bad input is cheap (design rule 10): a request body is bounded before anything parses it, and a
handler's waits end as soon as its client has gone.

`RequestLimits` is pure ASGI middleware. It alone reads the server's `receive`: body chunks are
counted as they arrive (a declared `Content-Length` over the limit is refused before a byte is
read) and handed on; past the limit the route's next read raises a 413 `HTTPException`, so the
OpenAI routes answer it in OpenAI's error shape and the native ones in FastAPI's. After the body
it keeps listening, and marks the request's `client_gone` event on `http.disconnect`: uvicorn
does not cancel a plain handler whose client left, so a wait that could outlast its client
(`client_left_within`) watches that event instead of sleeping.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.settings import settings

_client_gone: ContextVar[asyncio.Event | None] = ContextVar("client_gone", default=None)


class BodyTooLarge(HTTPException):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"the request body is {size}+ bytes; the limit is {limit}: send a smaller request",
        )


class RequestLimits:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        inbox: asyncio.Queue[Message | BodyTooLarge] = asyncio.Queue()
        gone = asyncio.Event()
        reader = asyncio.create_task(_read(receive, inbox, gone, _declared_length(scope), settings.api.max_body_bytes))
        token = _client_gone.set(gone)
        try:
            await self.app(scope, _from(inbox), send)
        finally:
            _client_gone.reset(token)
            reader.cancel()


async def client_left_within(timeout_s: float, unless: asyncio.Event | None = None) -> bool:
    """Wait up to `timeout_s`, or until `unless` is set; True as soon as the client of the
    request being served has gone."""
    gone = _client_gone.get()
    waits = [asyncio.ensure_future(event.wait()) for event in (gone, unless) if event is not None]
    if not waits:  # not behind RequestLimits (a test calling a handler directly): just wait
        await asyncio.sleep(timeout_s)
        return False
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return gone is not None and gone.is_set()


async def _read(
    receive: Receive, inbox: asyncio.Queue[Message | BodyTooLarge], gone: asyncio.Event, declared: int, limit: int
) -> None:
    """Pass the server's messages on, refusing a body over the limit, until the client disconnects."""
    if declared > limit:
        inbox.put_nowait(BodyTooLarge(declared, limit))
        return
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                inbox.put_nowait(BodyTooLarge(received, limit))
                return
        inbox.put_nowait(message)
        if message["type"] == "http.disconnect":
            gone.set()
            return


def _from(inbox: asyncio.Queue[Message | BodyTooLarge]) -> Receive:
    async def receive() -> Message:
        message = await inbox.get()
        if isinstance(message, BodyTooLarge):
            inbox.put_nowait(message)  # every later read fails the same way
            raise message
        if message["type"] == "http.disconnect":
            inbox.put_nowait(message)  # as from the server: once gone, every later read says so
        return message

    return receive


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0
