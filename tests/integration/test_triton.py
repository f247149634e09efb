"""The local Triton, for real: streaming over gRPC from the `scripted` and `smollm2` models.

Needs tritonserver running (`python -c "from infra import triton, process; triton.prepare();
process.start(triton.service())"`). Requests use the tensor interface of Triton's vLLM backend,
as steno's inference bridge does.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from infra.settings import settings

pytestmark = pytest.mark.integration

SCRIPT = "Hello there, friend."
SCRIPT_TOKENS = ["Hello ", "there, ", "friend."]
LONG_SCRIPT = " ".join(f"word{i}" for i in range(200))
PROMPT_TOKENS = "steno_prompt_tokens_total"


@dataclass(frozen=True)
class Response:
    text: str
    final: bool
    at: float  # time.monotonic() on arrival


@pytest.fixture
async def client() -> AsyncIterator[aioclient.InferenceServerClient]:
    client = aioclient.InferenceServerClient(settings.triton.grpc_url)
    yield client
    await client.close()


def vllm_inputs(
    prompt: str, sampling: dict[str, Any] | None = None, stream: bool = True
) -> list[grpcclient.InferInput]:
    """text_input, stream and sampling_parameters, as for Triton's vLLM backend."""
    values = {
        "text_input": ("BYTES", np.array([prompt.encode()], dtype=np.object_)),
        "stream": ("BOOL", np.array([stream], dtype=bool)),
        "sampling_parameters": (
            "BYTES",
            np.array([json.dumps(sampling or {}).encode()], dtype=np.object_),
        ),
    }
    inputs = []
    for name, (datatype, value) in values.items():
        tensor = grpcclient.InferInput(name, [1], datatype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def start_stream(client: aioclient.InferenceServerClient, model: str, prompt: str, **kwargs: Any) -> Any:
    """A gRPC stream carrying one request; iterate it for (result, error) pairs."""

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": model, "inputs": vllm_inputs(prompt, **kwargs)}

    return client.stream_infer(requests())


def as_response(result: grpcclient.InferResult) -> Response:
    text = result.as_numpy("text_output").reshape(-1)[0].decode()
    final = result.get_response().parameters["triton_final_response"].bool_param
    return Response(text=text, final=final, at=time.monotonic())


async def generate(client: aioclient.InferenceServerClient, model: str, prompt: str, **kwargs: Any) -> list[Response]:
    """Every response of one request, read until the server ends the stream.

    Reading to the end, rather than closing the stream on the final response, matters:
    Triton 2.51 can keep a model from unloading (slow `make down`) when a client drops a
    stream right after its final response.
    """
    responses = []
    async for result, error in start_stream(client, model, prompt, **kwargs):
        if error is not None:
            raise error
        responses.append(as_response(result))
    return responses


def metric(name: str, **labels: str) -> float:
    """A counter from Triton's Prometheus endpoint (0 before its first increment)."""
    cfg = settings.triton
    body = httpx.get(f"http://{cfg.host}:{cfg.metrics_port}/metrics", timeout=5).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in body.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and sorted(match.group(1).split(",")) == sorted(wanted.split(",")):
            return float(match.group(2))
    return 0.0


async def wait_for_metric(name: str, above: float, timeout_s: float = 20, **labels: str) -> float:
    deadline = time.monotonic() + timeout_s
    while (value := metric(name, **labels)) <= above:
        assert time.monotonic() < deadline, f"{name}{labels} stayed at {value}"
        await asyncio.sleep(0.1)
    return value


async def cancel_after(stream: Any, tokens: int) -> list[str]:
    """Read `tokens` responses from a stream, then cancel it as a client would."""
    texts = []
    async for result, error in stream:
        assert error is None, error
        texts.append(as_response(result).text)
        if len(texts) == tokens:
            break
    stream.cancel()
    return texts


# --- the interface -------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["scripted", "smollm2"])
async def test_models_have_the_vllm_backend_interface(client: aioclient.InferenceServerClient, model: str) -> None:
    config = (await client.get_model_config(model, as_json=True))["config"]
    inputs = {i["name"]: i["data_type"] for i in config["input"]}
    outputs = {o["name"]: o["data_type"] for o in config["output"]}
    assert inputs == {
        "text_input": "TYPE_STRING",
        "stream": "TYPE_BOOL",
        "sampling_parameters": "TYPE_STRING",
    }
    assert outputs == {"text_output": "TYPE_STRING"}
    assert config["model_transaction_policy"]["decoupled"] is True


# --- scripted ------------------------------------------------------------------------------


async def test_scripted_streams_the_script_one_token_per_response(
    client: aioclient.InferenceServerClient,
) -> None:
    responses = await generate(client, "scripted", "hi", sampling={"script": SCRIPT, "ttft_ms": 20, "itl_ms": 5})

    assert [r.text for r in responses] == [*SCRIPT_TOKENS, ""]
    assert [r.final for r in responses] == [False, False, False, True]


async def test_scripted_without_a_script_echoes_the_prompt(
    client: aioclient.InferenceServerClient,
) -> None:
    responses = await generate(client, "scripted", "ping pong")

    assert "".join(r.text for r in responses) == "You said: ping pong"


async def test_scripted_echoes_the_newest_user_turn_of_a_chat(client: aioclient.InferenceServerClient) -> None:
    chat = (
        '[{"role": "system", "content": "be brief"}, {"role": "user", "content": "one"}, '
        '{"role": "assistant", "content": "You said: one"}, {"role": "user", "content": "two"}]'
    )
    responses = await generate(client, "scripted", chat)

    assert "".join(r.text for r in responses) == "You said: two"


async def test_a_message_can_script_and_pace_its_own_reply(client: aioclient.InferenceServerClient) -> None:
    chat = json.dumps([{"role": "user", "content": f'scripted: {{"script": "{SCRIPT}", "itl_ms": 5}}\nignored'}])
    scripted = await generate(client, "scripted", chat, sampling={"itl_ms": 0})
    paced = await generate(client, "scripted", 'scripted: {"ttft_ms": 1}\nhello\nthere')
    broken = generate(client, "scripted", "scripted: not json\nhello")

    assert [r.text for r in scripted] == [*SCRIPT_TOKENS, ""]
    assert "".join(r.text for r in paced) == "You said: hello\nthere"
    with pytest.raises(InferenceServerException, match="`scripted:` line is not JSON"):
        await broken


async def test_scripted_stops_at_max_tokens(client: aioclient.InferenceServerClient) -> None:
    responses = await generate(client, "scripted", "hi", sampling={"script": SCRIPT, "max_tokens": "2"})

    assert [r.text for r in responses] == [*SCRIPT_TOKENS[:2], ""]


async def test_scripted_without_streaming_sends_one_final_response(
    client: aioclient.InferenceServerClient,
) -> None:
    responses = await generate(client, "scripted", "hi", sampling={"script": "  spaced  out "}, stream=False)

    assert [(r.text, r.final) for r in responses] == [("  spaced  out ", True)]


async def test_scripted_failure_ends_the_stream_with_an_error(
    client: aioclient.InferenceServerClient,
) -> None:
    texts = []

    async def read_until_the_error() -> None:
        async for result, error in start_stream(client, "scripted", "hi", sampling={"script": SCRIPT, "fail_after": 2}):
            if error is not None:
                raise error
            texts.append(as_response(result).text)

    with pytest.raises(InferenceServerException, match="scripted failure after 2 tokens"):
        await read_until_the_error()

    assert texts == SCRIPT_TOKENS[:2]


async def test_scripted_serves_concurrent_streams_at_the_same_time(
    client: aioclient.InferenceServerClient,
) -> None:
    sampling = {"script": SCRIPT, "ttft_ms": 300, "itl_ms": 100}

    streams = await asyncio.gather(*(generate(client, "scripted", f"stream {i}", sampling=sampling) for i in range(8)))

    for responses in streams:
        assert [r.text for r in responses] == [*SCRIPT_TOKENS, ""]
    # Served one after another, stream k's first token would follow stream k-1's last one.
    first_tokens = [responses[0].at for responses in streams]
    last_tokens = [responses[-2].at for responses in streams]
    assert max(first_tokens) < min(last_tokens)


async def test_cancelling_a_scripted_stream_stops_its_generation(
    client: aioclient.InferenceServerClient,
) -> None:
    labels: dict[str, Any] = {"model": "scripted"}
    cancelled_before = metric("steno_requests_total", outcome="cancelled", **labels)
    tokens_before = metric("steno_tokens_total", **labels)
    stream = start_stream(client, "scripted", "hi", sampling={"script": LONG_SCRIPT, "itl_ms": 20})

    assert await cancel_after(stream, tokens=3) == ["word0 ", "word1 ", "word2 "]

    await wait_for_metric("steno_requests_total", cancelled_before, outcome="cancelled", **labels)
    generated = metric("steno_tokens_total", **labels) - tokens_before
    assert 3 <= generated < 200 // 4  # stopped soon after the cancel, far from the script's end


# --- smollm2 -------------------------------------------------------------------------------


async def test_smollm2_answers_a_question(client: aioclient.InferenceServerClient) -> None:
    responses = await generate(
        client,
        "smollm2",
        "What is the capital of France?",
        sampling={"max_tokens": 32, "temperature": 0},
    )

    answer = "".join(r.text for r in responses)
    assert "Paris" in answer
    assert len(responses) > 3  # streamed token by token
    assert [r.final for r in responses] == [False] * (len(responses) - 1) + [True]


async def test_smollm2_continues_a_chat_given_as_json_messages(
    client: aioclient.InferenceServerClient,
) -> None:
    chat = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "And what is the capital of Germany?"},
    ]
    responses = await generate(client, "smollm2", json.dumps(chat), sampling={"max_tokens": 32, "temperature": 0})

    assert "Berlin" in "".join(r.text for r in responses)


async def test_smollm2_answers_a_conversations_next_turn_from_its_cache_despite_another_in_between(
    client: aioclient.InferenceServerClient,
) -> None:
    """The next turn's prompt is the last prompt, the reply and a new message: the model should
    evaluate only the new part, even when another conversation was answered meanwhile."""
    system = {"role": "system", "content": "You are a helpful assistant."}
    chat = [system, {"role": "user", "content": f"My name is {uuid.uuid4().hex}. Describe a calm lake at dawn."}]
    first, cached_before, evaluated_before = await smollm2_turn(client, chat)
    first_prompt = metric(PROMPT_TOKENS, source="cached", model="smollm2") - cached_before
    first_prompt += metric(PROMPT_TOKENS, source="evaluated", model="smollm2") - evaluated_before
    await smollm2_turn(client, [system, {"role": "user", "content": f"Another chat: {uuid.uuid4().hex}"}])

    chat += [{"role": "assistant", "content": first}, {"role": "user", "content": "Thank you. And at dusk?"}]
    _, cached_before, evaluated_before = await smollm2_turn(client, chat)

    assert metric(PROMPT_TOKENS, source="cached", model="smollm2") - cached_before >= first_prompt
    assert metric(PROMPT_TOKENS, source="evaluated", model="smollm2") - evaluated_before < first_prompt


async def smollm2_turn(client: aioclient.InferenceServerClient, chat: list[dict[str, str]]) -> tuple[str, float, float]:
    """The reply to `chat`, and the prompt token counters (cached, evaluated) before it; returns
    once the model counted the request (its outcome is counted after its tokens)."""
    cached, evaluated = (metric(PROMPT_TOKENS, source=source, model="smollm2") for source in ("cached", "evaluated"))
    completed = metric("steno_requests_total", outcome="completed", model="smollm2")
    responses = await generate(client, "smollm2", json.dumps(chat), sampling={"max_tokens": 24, "temperature": 0})
    await wait_for_metric("steno_requests_total", completed, outcome="completed", model="smollm2")
    return "".join(r.text for r in responses), cached, evaluated


async def test_cancelling_a_smollm2_stream_stops_the_model(
    client: aioclient.InferenceServerClient,
) -> None:
    labels: dict[str, Any] = {"model": "smollm2"}
    cancelled_before = metric("steno_requests_total", outcome="cancelled", **labels)
    tokens_before = metric("steno_tokens_total", **labels)
    stream = start_stream(
        client,
        "smollm2",
        "Count from 1 to 500, separated by commas.",
        sampling={"max_tokens": 1000, "temperature": 0},
    )

    assert len(await cancel_after(stream, tokens=3)) == 3

    await wait_for_metric("steno_requests_total", cancelled_before, outcome="cancelled", **labels)
    assert metric("steno_tokens_total", **labels) - tokens_before < 100


# --- stop texts and JSON constraints (vLLM's `stop` and `guided_decoding`) ------------------


async def test_scripted_ends_its_reply_before_a_stop_text_even_across_tokens(
    client: aioclient.InferenceServerClient,
) -> None:
    responses = await generate(client, "scripted", "hi", sampling={"script": SCRIPT, "stop": ["o th", "friend"]})

    assert [r.text for r in responses] == ["Hell", ""]


async def test_scripted_answers_guided_json_with_a_document_of_the_schema(
    client: aioclient.InferenceServerClient,
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "rank": {"type": "integer"}}}
    guided = await generate(client, "scripted", "Paris", sampling={"guided_decoding": {"json": schema}})
    any_object = await generate(client, "scripted", "Paris", sampling={"guided_decoding": {"json_object": True}})

    assert json.loads("".join(r.text for r in guided)) == {"city": "Paris", "rank": 0}
    assert json.loads("".join(r.text for r in any_object)) == {"text": "Paris"}


async def test_scripted_can_show_the_sampling_parameters_it_received(client: aioclient.InferenceServerClient) -> None:
    sampling = {"temperature": 0.5, "seed": 7, "echo_sampling": True}
    responses = await generate(client, "scripted", "hi", sampling=sampling)

    assert json.loads("".join(r.text for r in responses)) == sampling


async def test_smollm2_honours_a_json_schema_and_stop_texts(client: aioclient.InferenceServerClient) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
    }
    question = "What is the capital of France? Answer in JSON."
    guided = await generate(
        client, "smollm2", question, sampling={"max_tokens": 48, "temperature": 0, "guided_decoding": {"json": schema}}
    )
    stopped = await generate(
        client, "smollm2", question, sampling={"max_tokens": 32, "temperature": 0, "stop": "Paris"}
    )

    document = json.loads("".join(r.text for r in guided))
    assert set(document) == {"city", "country"} and all(isinstance(v, str) for v in document.values())
    answer = "".join(r.text for r in stopped)
    assert "Paris" not in answer and answer.strip(), answer
