"""One generation streamed from Triton over gRPC, in the tensor interface of Triton's vLLM backend.

The same inputs work against steno's local models and a production vLLM (or TensorRT-LLM with
the same ensemble interface) fleet:

    text_input           the chat as a JSON list of {"role", "content"} messages
    stream               true: one response per new piece of text
    sampling_parameters  JSON object; max_tokens plus the bridge's per-model extras

Whatever goes wrong — an error from the model, an unreachable server, a stall past the token
timeouts — surfaces as one exception type, `InferenceError`, whose message is fit to show a user.
Leaving the iterator early (a cancel, a timeout, the task being cancelled) cancels the gRPC call,
which Triton turns into a request cancellation, so the model stops generating.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as triton

from schemas.events import ChatTurn

OUTPUT = "text_output"
UNREACHABLE = {grpc.StatusCode.UNAVAILABLE}  # no connection, or the server went away mid-stream
FINAL_FLAG = "triton_final_response"


class InferenceError(Exception):
    """A generation could not finish; the message says why, in words a user can read.

    `retryable`: the server could not be reached or went away (restart, crash, network), so the
    same request may well succeed on another server or once this one is back; a model error or a
    stall is not retried, it would most likely happen again.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Timeouts:
    first_token_s: float  # includes queueing and prompt processing, so usually the longer one
    token_s: float


def prompt_text(prompt: Sequence[ChatTurn]) -> str:
    """The text_input for a chat: the JSON message list that chat-model backends template."""
    return json.dumps([turn.model_dump() for turn in prompt], ensure_ascii=False)


async def stream_text(
    client: triton.InferenceServerClient,
    model: str,
    prompt: Sequence[ChatTurn],
    sampling: Mapping[str, Any],
    timeouts: Timeouts,
) -> AsyncGenerator[str, None]:
    """The generated text, piece by piece as Triton streams it (empty pieces are skipped)."""
    call = client.stream_infer(_single_request(model, prompt_text(prompt), sampling))
    timeout_s = timeouts.first_token_s
    try:
        while True:
            result = await _next_result(call, timeout_s)
            if result is None:  # Triton ends the stream once the request's final response is out
                return
            text = _text(result)
            if text:
                yield text
            if _is_final(result):
                return
            timeout_s = timeouts.token_s
    finally:
        call.cancel()  # no-op once the stream has ended; otherwise tells Triton to stop the model


async def _single_request(model: str, text: str, sampling: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """The request side of the gRPC stream: one request, then half-close."""
    yield {"model_name": model, "inputs": _inputs(text, sampling)}


def _inputs(text: str, sampling: Mapping[str, Any]) -> list[triton.InferInput]:
    return [
        _tensor("text_input", np.array([text.encode()], dtype=np.object_), "BYTES"),
        _tensor("stream", np.array([True]), "BOOL"),
        _tensor("sampling_parameters", np.array([json.dumps(sampling).encode()], dtype=np.object_), "BYTES"),
    ]


def _tensor(name: str, value: npt.NDArray[Any], datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(value.shape), datatype)
    tensor.set_data_from_numpy(value)
    return tensor


async def _next_result(call: Any, timeout_s: float) -> triton.InferResult | None:
    """The next response, or None at the end of the stream; every failure as InferenceError."""
    try:
        async with asyncio.timeout(timeout_s):
            result, error = await anext(call)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise InferenceError(f"the model sent nothing for {timeout_s:g}s") from None
    except grpc.aio.AioRpcError as exc:
        message = f"inference server unavailable ({exc.code().name}): {exc.details()}"
        raise InferenceError(message, retryable=exc.code() in UNREACHABLE) from exc
    if error is not None:
        raise InferenceError(f"the model failed: {error.message()}")
    return result


def _text(result: triton.InferResult) -> str:
    output = result.as_numpy(OUTPUT)
    if output is None:
        return ""
    pieces = output.reshape(-1)
    return "".join(p.decode(errors="replace") if isinstance(p, bytes) else str(p) for p in pieces)


def _is_final(result: triton.InferResult) -> bool:
    parameters = result.get_response().parameters
    return FINAL_FLAG in parameters and parameters[FINAL_FLAG].bool_param
