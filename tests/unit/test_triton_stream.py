"""Reading Triton's stream: the text of each response, its end, and a model that stalls."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2

from inference_bridge.triton_stream import FINAL_FLAG, OUTPUT, InferenceError, ModelStalled, Timeouts, stream_text
from schemas.events import ChatTurn

PROMPT = [ChatTurn(role="user", content="hi")]
QUICK = Timeouts(first_token_s=5.0, token_s=5.0)


def response(*elements: bytes, final: bool = False, error: str = "") -> service_pb2.ModelStreamInferResponse:
    """A stream response as Triton sends it: text_output a BYTES tensor, each element length-prefixed."""
    infer = service_pb2.ModelInferResponse(
        outputs=[
            service_pb2.ModelInferResponse.InferOutputTensor(name=OUTPUT, datatype="BYTES", shape=[len(elements)])
        ],
        raw_output_contents=[b"".join(len(e).to_bytes(4, "little") + e for e in elements)],
    )
    infer.parameters[FINAL_FLAG].bool_param = final
    return service_pb2.ModelStreamInferResponse(error_message=error, infer_response=infer)


class Call:
    """A ModelStreamInfer call: its responses, each after `gap_s`, then the stream's end (or silence)."""

    def __init__(self, *responses: service_pb2.ModelStreamInferResponse, gap_s: float = 0.0, silent: bool = False):
        self.responses = list(responses)
        self.gap_s = gap_s
        self.silent = silent
        self.cancelled = asyncio.Event()

    async def read(self) -> Any:
        if self.cancelled.is_set():
            raise asyncio.CancelledError  # as grpc.aio reads a locally cancelled call
        if self.responses:
            await asyncio.sleep(self.gap_s)
            return self.responses.pop(0)
        if self.silent:
            await self.cancelled.wait()
            raise asyncio.CancelledError
        return grpc.aio.EOF

    def cancel(self) -> bool:
        self.cancelled.set()
        return True


class Endpoint:
    def __init__(self, call: Call) -> None:
        self.call = call
        self.requests: list[service_pb2.ModelInferRequest] = []

    def stream(self, request: service_pb2.ModelInferRequest) -> Call:
        self.requests.append(request)
        return self.call


async def read_all(call: Call, timeouts: Timeouts = QUICK, pause_s: float = 0.0) -> list[str]:
    pieces = []
    async for piece in stream_text(Endpoint(call), "scripted", PROMPT, {}, timeouts):  # type: ignore[arg-type]
        pieces.append(piece)
        await asyncio.sleep(pause_s)
    return pieces


async def test_each_response_text_is_a_piece_until_the_final_one() -> None:
    call = Call(response(b"Hello "), response(b""), response("wörld".encode(), b"!"), response(b"", final=True))

    assert await read_all(call) == ["Hello ", "wörld!"]  # an empty response is no piece
    assert call.cancelled.is_set()  # a no-op on an ended call; it stops an abandoned one


async def test_text_in_the_final_response_is_text() -> None:
    """Triton's vLLM backend flags its last token final instead of sending an empty final response."""
    assert await read_all(Call(response(b"a "), response(b"b", final=True), response(b"never"))) == ["a ", "b"]


async def test_the_request_carries_the_prompt_and_sampling_in_the_vllm_tensors() -> None:
    endpoint = Endpoint(Call(response(b"", final=True)))
    async for _ in stream_text(endpoint, "scripted", PROMPT, {"max_tokens": 3}, QUICK):  # type: ignore[arg-type]
        pass

    (request,) = endpoint.requests
    assert request.model_name == "scripted"
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [
        ("text_input", "BYTES", [1]),
        ("stream", "BOOL", [1]),
        ("sampling_parameters", "BYTES", [1]),
    ]
    text, stream, sampling = request.raw_input_contents
    assert text[4:] == b'[{"role":"user","content":"hi"}]' and int.from_bytes(text[:4], "little") == len(text) - 4
    assert (stream, sampling[4:]) == (b"\x01", b'{"max_tokens": 3}')


async def test_a_model_error_is_an_inference_error_that_is_not_retried() -> None:
    with pytest.raises(InferenceError, match="the model failed: boom") as raised:
        await read_all(Call(response(b"a "), response(error="boom")))
    assert not raised.value.retryable


async def test_a_model_silent_after_its_first_token_stalls_after_the_token_timeout() -> None:
    call = Call(response(b"a "), gap_s=0.25, silent=True)  # the first token after the stall check's first look
    started = time.monotonic()

    with pytest.raises(ModelStalled, match=r"the model sent nothing for 0\.1s") as raised:
        await read_all(call, Timeouts(first_token_s=30.0, token_s=0.1))

    assert not raised.value.retryable  # by itself: the bridge asks the server (see test_bridge)

    assert time.monotonic() - started < 5  # not the first token's 30 s
    assert call.cancelled.is_set()


async def test_a_model_silent_from_the_start_stalls_after_the_first_token_timeout() -> None:
    with pytest.raises(ModelStalled, match=r"the model sent nothing for 0\.1s"):
        await read_all(Call(silent=True), Timeouts(first_token_s=0.1, token_s=30.0))


async def test_time_the_reader_spends_between_responses_is_not_the_models() -> None:
    call = Call(*(response(b"x ") for _ in range(3)), response(b"", final=True), gap_s=0.01)

    assert await read_all(call, Timeouts(first_token_s=0.1, token_s=0.1), pause_s=0.25) == ["x "] * 3


async def test_a_cancelled_reader_is_cancelled_not_stalled() -> None:
    call = Call(silent=True)
    task = asyncio.create_task(read_all(call, Timeouts(first_token_s=30.0, token_s=30.0)))
    await asyncio.sleep(0.05)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert call.cancelled.is_set()  # Triton is told to stop the model
