"""Checks what steno sends against OpenAI's own published schemas (tests/fixtures/openai-openapi).

`conform(body, "CreateChatCompletionResponse")` raises jsonschema's ValidationError, naming the
path, when a body, stream chunk or stream event drifts from what OpenAI's typed clients expect.
The schemas are OpenAPI 3.1, i.e. JSON Schema 2020-12; `$ref`s resolve within the document.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

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
