"""The OpenAI request models: every field honoured or refused, errors naming it (no stack needed)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from infra.settings import settings
from ingest_api.openai_api import fields
from ingest_api.openai_api.chat_completions import ChatCompletionRequest
from ingest_api.openai_api.errors import OpenAIError, validation_error
from ingest_api.openai_api.prompt import turn
from ingest_api.openai_api.responses_api import CreateResponse
from ingest_api.openai_api.sampling import response_format
from tests.openai_conformance import documented_fields

MESSAGES = [{"role": "user", "content": "hi"}]


def refusal(model: type[fields.OpenAIRequest], body: dict[str, Any]) -> tuple[str, str | None]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    error = caught.value.errors()[0]
    return validation_error({**error, "loc": ("body", *error["loc"])})  # as FastAPI reports a body's errors


def test_the_readme_field_table_is_current() -> None:
    readme = fields.README.read_text()
    assert fields.current_readme() == readme, (
        "the README's OpenAI field table is stale: python -m ingest_api.openai_api.fields"
    )


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_token": 3}, "max_token"),  # a misspelling must not pass for the default
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"stream_options": {"include_obfuscation": True}}, "stream_options.include_obfuscation"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "extra": 1}}},
            "response_format.json_schema.extra",
        ),
        ({"messages": [], "model": "scripted"}, "messages"),
    ],
)
def test_chat_fields_steno_cannot_honour_are_refused_naming_them(extra: dict[str, Any], param: str) -> None:
    message, named = refusal(ChatCompletionRequest, {"model": "scripted", "messages": MESSAGES, **extra})
    assert named == param
    assert message.startswith(f"{param}: ")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools"),  # as chat completions: both refuse tools
        ({"text": {"verbosity": "high"}}, "text.verbosity"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"temperature": 9}, "temperature"),
        ({"seed": 1}, "seed"),  # not a Responses field
    ],
)
def test_responses_fields_steno_cannot_honour_are_refused_naming_them(extra: dict[str, Any], param: str) -> None:
    assert refusal(CreateResponse, {"model": "scripted", "input": "hi", **extra})[1] == param


def test_explicit_nulls_and_empty_refusables_are_accepted_as_openai_accepts_them() -> None:
    body = {"model": "scripted", "messages": MESSAGES, "n": None, "stream": None, "stream_options": None}
    nothing_asked = {"tools": [], "tool_choice": "none", "logprobs": False, "metadata": {}, "modalities": ["text"]}
    request = ChatCompletionRequest.model_validate(body | nothing_asked)
    assert request.stream is None and request.n is None
    assert turn({"role": "assistant", "content": None}, "messages.0").text == ""


def test_sampling_fields_become_the_messages_sampling_options() -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "scripted",
            "messages": MESSAGES,
            "stop": "\n",
            "temperature": 0.3,
            "seed": 5,
            "frequency_penalty": 1,
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
        }
    )
    sampling = request.sampling()
    assert (sampling.stop, sampling.temperature, sampling.seed, sampling.frequency_penalty) == (["\n"], 0.3, 5, 1.0)
    assert sampling.response_format is not None and sampling.response_format.json_schema == '{"type": "object"}'


def test_a_model_that_cannot_constrain_its_output_refuses_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings.models["scripted"], "structured_output", False)
    with pytest.raises(OpenAIError) as caught:
        response_format("json_object", None, "scripted", "text.format", "text.format.schema")
    assert caught.value.status_code == 400 and caught.value.param == "text.format"


def test_a_malformed_body_names_no_character_offset() -> None:
    error = {
        "type": "json_invalid",
        "loc": ("body", 20),
        "msg": "JSON decode error",
        "ctx": {"error": "Expecting value"},
    }
    assert validation_error(error) == ("the body is not valid JSON: Expecting value", None)


@pytest.mark.parametrize(
    ("model", "schema"),
    [(ChatCompletionRequest, "CreateChatCompletionRequest"), (CreateResponse, "CreateResponse")],
)
def test_the_request_models_declare_exactly_the_fields_openai_documents(
    model: type[fields.OpenAIRequest], schema: str
) -> None:
    declared = {field.alias or name for name, field in model.model_fields.items()}
    documented = documented_fields(schema)
    assert documented - declared == set(), "OpenAI documents fields steno neither honours nor refuses"
    assert declared - documented == set(), "steno declares fields OpenAI does not document"


def test_the_operator_narrows_a_sampling_option_and_outside_it_is_a_400(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings.api.sampling_limits, "temperature", (0.0, 1.0))
    body = {"model": "scripted", "messages": MESSAGES}

    assert ChatCompletionRequest.model_validate(body | {"temperature": 1.0}).temperature == 1.0
    message, param = refusal(ChatCompletionRequest, body | {"temperature": 1.2})
    assert (message, param) == (
        "temperature: 1.2 is outside this server's range for temperature, [0.0, 1.0]",
        "temperature",
    )
