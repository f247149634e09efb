"""A client's sampling options travel from its message to Triton's sampling_parameters unchanged."""

from __future__ import annotations

import json
from typing import cast

from inference_bridge.sampling import sampling_parameters
from infra.settings import ModelSettings
from schemas.events import (
    ChatTurn,
    InferenceRequested,
    MessageAccepted,
    PromptOptions,
    ResponseFormat,
    SamplingOptions,
)
from stream_processors.context_assembly import ContextAssembler
from stream_processors.conversation import ConversationReader
from stream_processors.conversation_positions import Earlier

SAMPLING = SamplingOptions(stop=["\n\n", "END"], temperature=0.7, seed=3, presence_penalty=-0.5)


class OneMessage:
    """A conversation reader whose conversation is the message alone."""

    async def turns_through(self, accepted: MessageAccepted, partition: int, earlier: Earlier) -> list[ChatTurn]:
        return [ChatTurn(role="user", content=accepted.content)]


def request(sampling: SamplingOptions) -> InferenceRequested:
    return InferenceRequested(
        conversation_id="c",
        user_id="u",
        message_id="m",
        response_id="r",
        model="scripted",
        prompt=[],
        prompt_tokens=0,
        max_tokens=16,
        sampling=sampling,
    )


def test_the_clients_options_override_the_models_defaults_and_unset_ones_leave_them() -> None:
    parameters = sampling_parameters(request(SAMPLING), {"temperature": 0.0, "top_p": 0.9, "itl_ms": 10})
    assert parameters == {
        "temperature": 0.7,
        "top_p": 0.9,
        "itl_ms": 10,
        "seed": 3,
        "presence_penalty": -0.5,
        "stop": ["\n\n", "END"],
        "max_tokens": 16,
    }


def test_a_response_format_is_vllms_guided_decoding() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    as_schema = SamplingOptions(response_format=ResponseFormat(type="json_schema", json_schema=json.dumps(schema)))
    any_object = SamplingOptions(response_format=ResponseFormat(type="json_object"))
    assert sampling_parameters(request(as_schema), {})["guided_decoding"] == {"json": schema}
    assert sampling_parameters(request(any_object), {})["guided_decoding"] == {"json_object": True}


async def test_context_assembly_carries_the_messages_sampling_options_to_the_inference_request() -> None:
    models = {"scripted": ModelSettings(context_window=512, max_tokens=128, tokenizer="words")}
    assembler = ContextAssembler(cast(ConversationReader, OneMessage()), "be brief", models)
    accepted = MessageAccepted(
        conversation_id="c",
        user_id="u",
        message_id="m",
        response_id="r",
        model="scripted",
        content="hello",
        submitted_offset=0,
        options=PromptOptions(sampling=SAMPLING),
    )
    request = await assembler.request(accepted, partition=0, earlier=Earlier.unknown(0))
    assert isinstance(request, InferenceRequested)
    assert request.sampling == SAMPLING
