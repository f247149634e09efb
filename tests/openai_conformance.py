"""Checks what steno sends against OpenAI's own published schemas (tests/fixtures/openai-openapi).

`conform(body, "CreateChatCompletionResponse")` raises jsonschema's ValidationError, naming the
path, when a body, stream chunk or stream event drifts from what OpenAI's typed clients expect.
The schemas are OpenAPI 3.1, i.e. JSON Schema 2020-12; `$ref`s resolve within the document.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

EXTRACT = Path(__file__).resolve().parent / "fixtures" / "openai-openapi" / "schemas.json"
DOCUMENT = "urn:openai-openapi"


@cache
def schemas() -> dict[str, Any]:
    extract: dict[str, Any] = _nullable(json.loads(EXTRACT.read_text())["schemas"])
    return extract


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true`, which the document still uses in places, as JSON Schema's null type."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    if not node.pop("nullable", False):
        return node
    if isinstance(node.get("type"), str) and "enum" not in node:
        return {**node, "type": [node["type"], "null"]}
    return {"anyOf": [node, {"type": "null"}]}


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    document = Resource.from_contents({"components": {"schemas": schemas()}}, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(DOCUMENT, document)
    return jsonschema.Draft202012Validator({"$ref": f"{DOCUMENT}#/components/schemas/{name}"}, registry=registry)


def conform(body: Any, name: str) -> None:
    """Raise ValidationError unless `body` is valid against OpenAI's schema `name`; a union of typed
    objects (ResponseStreamEvent) is checked against the member of the body's `type`, so an error
    names the field, not just the union."""
    if isinstance(body, dict) and isinstance(body.get("type"), str):
        name = _member(name, body["type"]) or name
    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(body))
    if error is not None:
        raise error


def _member(union: str, kind: str) -> str | None:
    for option in schemas()[union].get("anyOf", []) + schemas()[union].get("oneOf", []):
        member = option.get("$ref", "").rsplit("/", 1)[-1]
        declared = schemas().get(member, {}).get("properties", {}).get("type", {})
        if kind in declared.get("enum", []) or declared.get("const") == kind:
            return member
    return None


def documented_fields(name: str) -> set[str]:
    """The properties an object of schema `name` may have, through its allOf/$ref parts."""
    return _properties(schemas()[name])


def _properties(schema: dict[str, Any]) -> set[str]:
    if "$ref" in schema:
        return _properties(schemas()[schema["$ref"].rsplit("/", 1)[-1]])
    found = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        found |= _properties(part)
    return found


# --- recording what clients receive ------------------------------------------------------

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
