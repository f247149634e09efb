"""SseResponse: the event stream of a reply, its heartbeats, and its end when the client leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from sse_starlette import EventSourceResponse
from starlette.types import Message

from ingest_api.sse import SseResponse, accepts_event_stream, event_bytes


class Client:
    """The server's side of one connection: what the app sent, and a disconnect to trigger."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.gone = asyncio.Event()
        self._requested = False

    async def receive(self) -> Message:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


def scope(method: str = "GET") -> dict[str, object]:
    return {"type": "http", "method": method, "headers": []}


async def test_chunks_then_the_end_with_sse_starlettes_headers() -> None:
    async def chunks() -> AsyncGenerator[bytes, None]:
        yield b"a"
        yield b"b"

    client = Client()
    await SseResponse(chunks(), ping_s=15)(scope(), client.receive, client.send)
    assert client.sent[0]["headers"] == EventSourceResponse(chunks(), ping=15).raw_headers
    assert client.bodies == [b"a", b"b", b""]
    assert client.sent[-1]["more_body"] is False


async def test_an_idle_stream_sends_heartbeats() -> None:
    release = asyncio.Event()

    async def chunks() -> AsyncGenerator[bytes, None]:
        await release.wait()
        yield b"late"

    client = Client()
    response = asyncio.create_task(SseResponse(chunks(), ping_s=0.01)(scope(), client.receive, client.send))
    while len(client.bodies) < 2:  # noqa: ASYNC110  (the response's own timer sends them)
        await asyncio.sleep(0.005)
    release.set()
    await asyncio.wait_for(response, 5)
    assert all(body.startswith(b": ping - ") and body.endswith(b"\r\n\r\n") for body in client.bodies[:2])
    assert client.bodies[-2:] == [b"late", b""]


async def test_a_client_that_leaves_stops_the_stream_and_closes_its_generator() -> None:
    """The generator's cleanup (a reply's unsubscribe from the token feed) runs at once, not when
    the reply ends."""
    closed = asyncio.Event()

    async def chunks() -> AsyncGenerator[bytes, None]:
        try:
            yield b"first"
            await asyncio.Event().wait()  # a reply whose next token is far away
            yield b"never"
        finally:
            closed.set()

    client = Client()
    response = asyncio.create_task(SseResponse(chunks(), ping_s=15)(scope(), client.receive, client.send))
    while not client.bodies:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    client.gone.set()
    await asyncio.wait_for(response, 5)
    assert closed.is_set()
    assert client.bodies == [b"first"]


async def test_a_failing_stream_raises() -> None:
    async def chunks() -> AsyncGenerator[bytes, None]:
        yield b"first"
        raise RuntimeError("the log is gone")

    client = Client()
    with pytest.raises(RuntimeError, match="the log is gone"):
        await SseResponse(chunks(), ping_s=15)(scope(), client.receive, client.send)


async def test_head_is_answered_with_headers_only() -> None:
    async def chunks() -> AsyncGenerator[bytes, None]:
        yield b"never"

    client = Client()
    await asyncio.wait_for(SseResponse(chunks(), ping_s=15)(scope("HEAD"), client.receive, client.send), 5)
    assert client.bodies == [b""]


def test_event_bytes() -> None:
    assert event_bytes("done", '{"outcome": "completed"}', 12) == (
        b'id: 12\r\nevent: done\r\ndata: {"outcome": "completed"}\r\n\r\n'
    )
    assert event_bytes("response", "{}") == b"event: response\r\ndata: {}\r\n\r\n"


@pytest.mark.parametrize(
    ("accept", "streamed"),
    [
        ("text/event-stream", True),
        ("application/json, Text/Event-Stream;q=0.5", True),
        ("text/event-stream; q=0", False),
        ("text/event-stream;q=0.0, application/json", False),
        ("text/event-stream; Q=0.001", True),
        ("application/json", False),
        ("*/*", False),  # a client that takes anything gets the 202 it always got
        ("", False),
    ],
)
def test_a_post_streams_its_reply_only_when_the_client_asks_for_an_event_stream(accept: str, streamed: bool) -> None:
    assert accepts_event_stream(accept) is streamed
