"""Every response carries `x-request-id`, and every log line the API writes while serving it names it.

OpenAI's SDKs expose the header as `request_id` on responses and errors; a user who quotes it lets
an operator find the request's log lines. A client-sent `X-Request-Id` of safe characters is kept
(a proxy's id then runs through); otherwise one is minted (`req_` + 32 hex digits).
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
SAFE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
current: ContextVar[str] = ContextVar("request_id", default="-")


class RequestIds:
    """Pure ASGI middleware: the id is set before the app runs, so uvicorn's access line has it too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _sent(scope) or f"req_{uuid.uuid4().hex}"
        token = current.set(request_id)

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, with_id)
        finally:
            current.reset(token)


def _sent(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == HEADER.encode():
            text = value.decode("latin-1")
            return text if SAFE.fullmatch(text) else None
    return None


class WithRequestId(logging.Filter):
    """Gives each record the id of the request being served (`-` outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current.get()
        return True


def configure_logging() -> None:
    """INFO lines on stderr, uvicorn's included, each with the request's id."""
    handler = logging.StreamHandler()
    handler.addFilter(WithRequestId())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
