"""Server-Sent Events for the streams that carry every token (steno's and the OpenAI API's),
written straight to bytes.

sse-starlette's `EventSourceResponse` runs four tasks in a task group per stream and a cancel
scope and a lock per chunk, and its `ServerSentEvent` builds each event through a StringIO and
regular expressions: on a reply's stream that is paid per chunk and per token. `SseResponse`
puts the same bytes on the wire (the same headers, `\\r\\n` line ends, a `: ping - <time>`
comment every `ping_s`) with two tasks per stream: one writes the chunks, the request's own waits
for the client to leave and sends the heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

HEADERS = {"Cache-Control": "no-store", "Connection": "keep-alive", "X-Accel-Buffering": "no"}


def event_bytes(name: str, data: str, event_id: int | None = None) -> bytes:
    """One event: `id:` (when given), `event:` and `data:` lines, then the blank line.

    `data` must be one line, as JSON from `json.dumps` always is (it escapes line breaks)."""
    if event_id is None:
        return b"event: %s\r\ndata: %s\r\n\r\n" % (name.encode(), data.encode())
    return b"id: %d\r\nevent: %s\r\ndata: %s\r\n\r\n" % (event_id, name.encode(), data.encode())


def event_data(data: bytes) -> bytes:
    """An event of `data` alone (one line), as OpenAI's streams send them."""
    return b"data: %s\r\n\r\n" % data


def accepts_event_stream(accept: str) -> bool:
    """Whether an Accept header asks for an event stream (listed, and not with q=0)."""
    for item in accept.split(","):
        media_type, *parameters = (part.strip() for part in item.split(";"))
        if media_type.lower() == "text/event-stream":
            return _quality(parameters) > 0
    return False


def _quality(parameters: list[str]) -> float:
    """A media range's q value (RFC 9110: 1 when absent; an unreadable one counts as absent)."""
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 1.0
    return 1.0


def ping_bytes() -> bytes:
    """The heartbeat comment, as sse-starlette words it: proxies see traffic, clients ignore it."""
    return f": ping - {datetime.now(UTC)}\r\n\r\n".encode()


class SseResponse(Response):
    """An event stream of pre-encoded chunks; ends when they do, or when the client leaves."""

    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncGenerator[bytes, None], ping_s: float) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(HEADERS)
        self._chunks = chunks
        self._ping_s = ping_s or None  # 0: no heartbeats
        self._sending = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope["method"] == "HEAD":  # headers only: a stream that never ends would hang the client
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        writer = asyncio.create_task(self._write(send))
        client = asyncio.create_task(_until_disconnect(receive))
        try:
            while True:
                done, _ = await asyncio.wait(
                    (writer, client), timeout=self._ping_s, return_when=asyncio.FIRST_COMPLETED
                )
                if writer in done:
                    writer.result()  # the stream's error, if it failed
                    return
                if client in done:
                    return  # nobody reads on: the writer is stopped below, its generators closed
                if not self._sending:  # a chunk on its way is traffic enough
                    await send({"type": "http.response.body", "body": ping_bytes(), "more_body": True})
        finally:
            client.cancel()
            if not writer.done():
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer

    async def _write(self, send: Send) -> None:
        async with contextlib.aclosing(self._chunks) as chunks:
            async for chunk in chunks:
                self._sending = True
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self._sending = False
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
