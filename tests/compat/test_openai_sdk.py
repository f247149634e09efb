"""The official openai SDK beyond the basics: parse, stop, sampling, routes, raw responses, errors."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from infra.settings import settings
from tests.compat.conftest import BASE_URL, reply_in_history
from tests.integration.steno_client import StenoClient, scripted, until
from tests.openai_conformance import Recorder

pytestmark = pytest.mark.integration

SCRIPT = "Thought: look it up.\nObservation: 42\nAnswer: 42"
LOG_TAIL_BYTES = 256 * 1024


def api_logs() -> list[Path]:
    """Where every API process writes (one file per instance)."""
    return sorted(settings.stack.log_dir.glob("api*.log"))


class City(BaseModel):
    name: str
    population: int
    capital: bool


async def test_stop_cuts_the_reply_alike_in_the_stream_the_object_and_history(
    sdk: openai.AsyncOpenAI, steno: StenoClient
) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": scripted("q", script=SCRIPT)}]
    final = await sdk.chat.completions.create(model="scripted", messages=messages, stop=["Observ", "never"])
    streamed = await sdk.chat.completions.create(model="scripted", messages=messages, stop="Observ", stream=True)
    chunks = [chunk async for chunk in streamed]

    assert final.choices[0].message.content == "Thought: look it up.\n"
    assert final.choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Thought: look it up.\n"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


async def test_stop_is_what_history_keeps(sdk: openai.AsyncOpenAI, steno: StenoClient) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": scripted("q", script=SCRIPT)}]
    await sdk.chat.completions.create(model="scripted", messages=messages, stop=["look it"])

    assert await reply_in_history(steno) == "Thought: "


async def test_sampling_options_reach_the_model(sdk: openai.AsyncOpenAI) -> None:
    reply = await sdk.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": scripted("q", echo_sampling=True)}],
        temperature=0.25,
        top_p=0.5,
        seed=11,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        max_completion_tokens=100,
    )
    received = json.loads(reply.choices[0].message.content or "")

    assert {k: received[k] for k in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")} == {
        "temperature": 0.25,
        "top_p": 0.5,
        "seed": 11,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
    }
    assert received["max_tokens"] == 100


async def test_parse_returns_a_valid_object(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.parse(
        model="scripted", messages=[{"role": "user", "content": "Paris"}], response_format=City
    )
    as_json_object = await sdk.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "Paris"}], response_format={"type": "json_object"}
    )

    assert completion.choices[0].message.parsed == City(name="Paris", population=0, capital=True)
    assert json.loads(as_json_object.choices[0].message.content or "") == {"text": "Paris"}


async def test_responses_text_format_returns_a_valid_object(sdk: openai.AsyncOpenAI) -> None:
    response = await sdk.responses.parse(model="scripted", input="Lyon", text_format=City)

    assert response.output_parsed == City(name="Lyon", population=0, capital=True)


async def test_smollm2_structured_output_is_valid(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.parse(
        model="smollm2",
        messages=[{"role": "user", "content": "Describe Paris, the capital of France, as JSON."}],
        response_format=City,
        max_completion_tokens=60,
    )

    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, City), completion.choices[0].message.content


async def test_responses_retrieve_input_items_and_delete(sdk: openai.AsyncOpenAI, steno: StenoClient) -> None:
    created = await sdk.responses.create(model="scripted", input="keep me")
    raw = await sdk.responses.with_raw_response.retrieve(created.id)
    retrieved = raw.parse()
    items = await sdk.responses.input_items.list(created.id)
    await sdk.responses.delete(created.id)

    assert retrieved.output_text == "You said: keep me"
    assert isinstance(raw.http_response.json()["created_at"], int)  # OpenAI's integer seconds
    assert [item.model_dump(exclude_none=True)["content"] for item in items.data] == [
        [{"type": "input_text", "text": "keep me"}]
    ]
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(created.id)

    async def forgotten() -> bool:  # the history view applies the ConversationDeleted event
        return (await steno.http.get("/v1/conversations")).json() == []

    await until(forgotten)


async def test_models_retrieve(sdk: openai.AsyncOpenAI) -> None:
    model = await sdk.models.retrieve("scripted")
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.models.retrieve("gpt-9")

    assert (model.id, model.owned_by) == ("scripted", "steno")
    assert missing.value.code == "model_not_found"


async def test_raw_responses_and_errors_carry_a_request_id(sdk: openai.AsyncOpenAI) -> None:
    raw = await sdk.chat.completions.with_raw_response.create(
        model="scripted", messages=[{"role": "user", "content": "hi"}]
    )
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}], logprobs=True)

    assert raw.request_id and raw.request_id.startswith("req_")
    assert raw.parse().choices[0].message.content == "You said: hi"
    assert refused.value.request_id and refused.value.param == "logprobs"


async def test_tools_are_refused_alike_by_both_apis(sdk: openai.AsyncOpenAI) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as chat:
        await sdk.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}], tools=[tool])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError) as responses:
        await sdk.responses.create(
            model="scripted", input="hi", tools=[{"type": "function", "name": "f", "parameters": {}, "strict": False}]
        )

    assert (chat.value.param, responses.value.param) == ("tools", "tools")


async def test_unserved_routes_say_so_in_openais_shape(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as embeddings:
        await sdk.embeddings.create(model="scripted", input="hi")
    with pytest.raises(openai.NotFoundError) as completions:
        await sdk.completions.create(model="scripted", prompt="hi")

    assert embeddings.value.code == completions.value.code == "unsupported_route"
    assert "POST /v1/embeddings" in embeddings.value.message


async def test_explicit_nulls_are_accepted_and_bad_json_names_no_offset(
    token: str, recorder: Recorder, async_http_client: httpx.AsyncClient
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    body = {
        "model": "scripted",
        "n": None,
        "stream": None,
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": None},
            {"role": "user", "content": "b"},
        ],
    }
    accepted = await async_http_client.post(f"{BASE_URL}/chat/completions", json=body, headers=headers)
    malformed = await async_http_client.post(
        f"{BASE_URL}/chat/completions", content=b'{"model": "scripted",', headers=headers
    )

    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["choices"][0]["message"]["content"] == "You said: b"
    assert malformed.status_code == 400 and malformed.json()["error"]["param"] is None
    assert accepted.headers["x-request-id"] != malformed.headers["x-request-id"]


async def test_a_streamed_response_conforms_event_by_event(sdk: openai.AsyncOpenAI, recorder: Recorder) -> None:
    async with sdk.responses.stream(model="scripted", input="stream me", temperature=0.5) as stream:
        final = await stream.get_final_response()
    usage_stream = await sdk.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "count me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in usage_stream]

    assert final.output_text == "You said: stream me"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert recorder.check() > 10  # every event and chunk above was validated against OpenAI's schemas


async def test_the_apis_log_lines_name_the_request_id_and_the_end_user(sdk: openai.AsyncOpenAI) -> None:
    raw = await sdk.chat.completions.with_raw_response.create(
        model="scripted", messages=[{"role": "user", "content": "hi"}], user="end-user-7"
    )

    async def logged() -> bool:
        tails = (path.read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace") for path in api_logs())
        return any(
            f"[{raw.request_id}]" in line and "end-user-7" in line for tail in tails for line in tail.splitlines()
        )

    await until(logged)


async def test_an_unstored_chat_completion_leaves_history_once_answered(
    sdk: openai.AsyncOpenAI, steno: StenoClient
) -> None:
    reply = await sdk.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "forget me"}], store=False
    )

    async def forgotten() -> bool:
        return (await steno.http.get("/v1/conversations")).json() == []

    assert reply.choices[0].message.content == "You said: forget me"
    await until(forgotten)
