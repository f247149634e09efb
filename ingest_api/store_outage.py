"""A store that cannot be reached is the server's passing trouble, not the request's: answer 503
with `Retry-After` (clients and load balancers retry it), never a 500.

Redis or Cassandra restarting makes any request that reads them fail for a few seconds; the
request itself was fine, so it must not read as a bug of steno's or of the client's.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.exception_handlers import http_exception_handler

from infra.store_errors import STORE_UNAVAILABLE

RETRY_AFTER_S = 2


def as_http_error(exc: Exception) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail=f"a store steno reads is unreachable for now ({type(exc).__name__}); send the request again shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def install(app: FastAPI) -> None:
    """Answer every store outage of the app's routes with a 503 (OpenAI routes shape their own)."""

    async def unavailable(request: Request, exc: Exception) -> Response:
        return await http_exception_handler(request, as_http_error(exc))

    for exc_type in STORE_UNAVAILABLE:
        app.add_exception_handler(exc_type, unavailable)
