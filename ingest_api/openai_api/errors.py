"""Errors in OpenAI's shape, so its SDKs raise the exception their users already handle.

`{"error": {"message", "type", "param", "code"}}` with OpenAI's status codes. The routes of
this package use `OpenAIRoute`, which turns steno's own HTTP errors (auth, ownership, conflicts)
and request validation errors into that shape; the native API keeps FastAPI's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from infra.store_errors import STORE_UNAVAILABLE
from ingest_api import store_outage

log = logging.getLogger(__name__)
ERROR_TYPES = {
    status.HTTP_400_BAD_REQUEST: "invalid_request_error",
    status.HTTP_401_UNAUTHORIZED: "authentication_error",
    status.HTTP_403_FORBIDDEN: "permission_error",
    status.HTTP_404_NOT_FOUND: "not_found_error",
    status.HTTP_409_CONFLICT: "conflict_error",
    status.HTTP_413_CONTENT_TOO_LARGE: "invalid_request_error",
    status.HTTP_422_UNPROCESSABLE_CONTENT: "invalid_request_error",
}


class OpenAIError(HTTPException):
    """An error a client can act on; `param` names the offending request field."""

    def __init__(self, status_code: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(status_code, detail=message)
        self.param = param
        self.code = code


def error_body(status_code: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    error_type = ERROR_TYPES.get(status_code, "server_error" if status_code >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def invalid(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(status.HTTP_400_BAD_REQUEST, message, param=param)


class OpenAIRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def openai_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                message, param = validation_error(exc.errors()[0])
                return JSONResponse(
                    error_body(status.HTTP_400_BAD_REQUEST, message, param), status.HTTP_400_BAD_REQUEST
                )
            except StarletteHTTPException as exc:  # FastAPI's own, and Starlette's (a body that is not UTF-8)
                return _in_openai_shape(exc)
            except STORE_UNAVAILABLE as exc:
                return _in_openai_shape(store_outage.as_http_error(exc))
            except Exception:  # a bug: still OpenAI's shape, and the request id (header, log) to find it by
                log.exception("%s %s failed", request.method, request.url.path)
                message = "steno failed to serve the request: give its x-request-id to the operator"
                return JSONResponse(error_body(500, message), status.HTTP_500_INTERNAL_SERVER_ERROR)

        return openai_errors


def _in_openai_shape(exc: StarletteHTTPException) -> JSONResponse:
    param, code = getattr(exc, "param", None), getattr(exc, "code", None)
    body = error_body(exc.status_code, str(exc.detail), param=param, code=code)
    return JSONResponse(body, exc.status_code, headers=exc.headers)


def validation_error(error: Any) -> tuple[str, str | None]:
    """A request validation error as OpenAI's message and `param` (the field's path, e.g. `messages.0.role`)."""
    if error["type"] == "json_invalid":  # its loc holds a character offset, not a field
        return f"the body is not valid JSON: {error['ctx'].get('error', error['msg'])}", None
    param = ".".join(str(part) for part in error["loc"][1:] if not _union_member(part))
    if error["type"] == "extra_forbidden":
        return f"{param}: unknown field: OpenAI documents no such field for this request; remove it", param
    return f"{param}: {error['msg']}", param or None


def _union_member(part: object) -> bool:
    """pydantic names the member of a union a value failed in (`str`, `list[str]`, `function-after[...]`)."""
    return isinstance(part, str) and (part in {"str", "int", "float", "bool", "dict", "list"} or "[" in part)
