"""The sampling fields of OpenAI requests, as the SamplingOptions that travel with the message.

`response_format` (chat) and `text.format` (Responses) become a ResponseFormat: constrained
decoding, which the model must support (ModelSettings.structured_output), else a 400.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from infra.settings import settings
from ingest_api.openai_api.errors import invalid
from ingest_api.openai_api.fields import OpenAIRequest, honoured
from schemas.events import ResponseFormat

FormatType = Literal["text", "json_object", "json_schema"]
FORMAT_TYPE = (
    "`text`: free text; `json_object`: a JSON object; `json_schema`: a JSON document valid against the schema. "
    "Both JSON kinds are constrained decoding (llama.cpp grammar, vLLM guided decoding, the scripted model's "
    "schema-valid document); a model configured without `structured_output` refuses them (400)"
)
NAME = "names the schema (required by OpenAI; steno needs no name)"
SCHEMA = "the JSON Schema the reply is constrained to"
DESCRIPTION = "accepted; the schema alone constrains the reply (the model is not shown the description)"
STRICT = "accepted either way: the reply always conforms (constrained decoding), strict or not"


class JSONSchemaParam(OpenAIRequest):
    name: str = honoured(NAME, ...)
    schema_: dict[str, Any] | None = honoured(SCHEMA, alias="schema")
    description: str | None = honoured(DESCRIPTION)
    strict: bool | None = honoured(STRICT)


class ResponseFormatParam(OpenAIRequest):
    """Chat completions' `response_format`."""

    type: FormatType = honoured(FORMAT_TYPE, ...)
    json_schema: JSONSchemaParam | None = honoured("required with `type: json_schema`")


class TextFormatParam(OpenAIRequest):
    """The Responses API's `text.format`: the same as `response_format`, flattened."""

    type: FormatType = honoured(FORMAT_TYPE, ...)
    name: str | None = honoured(NAME)
    schema_: dict[str, Any] | None = honoured(SCHEMA, alias="schema")
    description: str | None = honoured(DESCRIPTION)
    strict: bool | None = honoured(STRICT)


def response_format(
    kind: str | None, schema: dict[str, Any] | None, model: str, param: str, schema_param: str
) -> ResponseFormat | None:
    """The constraint to put on the reply, None for free text; a 400 when the model cannot."""
    if kind in (None, "text"):
        return None
    if not settings.models[model].structured_output:
        raise invalid(f"the model {model!r} cannot constrain its reply to JSON: leave {param} out", param)
    if kind == "json_schema" and schema is None:
        raise invalid("`json_schema` needs the schema to constrain the reply to", schema_param)
    text = json.dumps(schema, sort_keys=True) if kind == "json_schema" else None
    return ResponseFormat(type="json_schema" if kind == "json_schema" else "json_object", json_schema=text)


def chat_format(body: ResponseFormatParam | None, model: str) -> ResponseFormat | None:
    if body is None:
        return None
    schema = body.json_schema.schema_ if body.json_schema else None
    return response_format(body.type, schema, model, "response_format", "response_format.json_schema.schema")


def text_format(body: TextFormatParam | None, model: str) -> ResponseFormat | None:
    if body is None:
        return None
    return response_format(body.type, body.schema_, model, "text.format", "text.format.schema")
