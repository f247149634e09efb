"""One generation streamed from Triton over gRPC, in the tensor interface of Triton's vLLM backend.

The same inputs work against steno's local models and a production vLLM (or TensorRT-LLM with
the same ensemble interface) fleet:

    text_input           the chat as a JSON list of {"role", "content"} messages
    stream               true: one response per new piece of text
    sampling_parameters  JSON object; max_tokens plus the bridge's per-model extras

Whatever goes wrong — an error from the model, an unreachable server, a stall past the token
timeouts (`ModelStalled`) — surfaces as one exception type, `InferenceError`, whose message is
fit to show a user.
Leaving the iterator early (a cancel, a timeout, the task being cancelled) cancels the gRPC call,
which Triton turns into a request cancellation, so the model stops generating.

Every response is one token, so this is the bridge's hottest path: it speaks Triton's gRPC
protocol through the generated stub (`tritonclient.grpc.service_pb2_grpc`) rather than
tritonclient's client, whose per-response wrapping (an `InferResult`, a numpy array per output)
cost more than the rest of the read, and watches for a stalled model with one timer per stream
(`_Responses`) instead of a timeout per response.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from pydantic import TypeAdapter
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, service_pb2, service_pb2_grpc

from schemas.events import ChatTurn

OUTPUT = "text_output"
UNREACHABLE = {grpc.StatusCode.UNAVAILABLE}  # no connection, or the server went away mid-stream
FINAL_FLAG = "triton_final_response"
_LENGTH = struct.Struct("<I")  # a BYTES tensor element's length prefix
_SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
_PROMPT = TypeAdapter(list[ChatTurn])

# tritonclient's channel options, plus reconnects: gRPC backs off up to 2 minutes between
# reconnects to a lost server, failing requests at once meanwhile; a Triton that restarts in
# seconds should get traffic again within a second.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class InferenceError(Exception):
    """A generation could not finish; the message says why, in words a user can read.

    `retryable`: the server could not be reached or went away (restart, crash, network), so the
    same request may well succeed on another server or once this one is back; a model error is
    not retried, it would most likely happen again.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ModelStalled(InferenceError):
    """The model sent nothing for its token timeout. Whether that is retried depends on what the
    stream cannot see: whether the server still answers at all (the bridge probes it)."""


@dataclass(frozen=True)
class Timeouts:
    first_token_s: float  # includes queueing and prompt processing, so usually the longer one
    token_s: float


class Endpoint:
    """One Triton server's gRPC endpoint: a channel for its streams and readiness probes.

    ModelStreamInfer is a bidirectional stream, but a generation sends one request. Called as a
    unary-stream method it sends that request and half-closes, the same on the wire, without the
    task that feeds a request iterator and the two writes it awaits: ~60 µs less per reply.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._channel = grpc.aio.insecure_channel(url, options=CHANNEL_OPTIONS)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._stream_infer = self._channel.unary_stream(
            f"/{_SERVICE}/ModelStreamInfer",
            request_serializer=service_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=service_pb2.ModelStreamInferResponse.FromString,
        )

    def stream(self, request: service_pb2.ModelInferRequest) -> Any:
        """A ModelStreamInfer call of just `request`: its responses, read with `read()`."""
        return self._stream_infer(request)

    async def serves(self, model: str, timeout_s: float) -> bool:
        """Whether the server answers within `timeout_s` and has the model loaded."""
        try:
            response = await self._stub.ModelReady(service_pb2.ModelReadyRequest(name=model), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return bool(response.ready)

    async def close(self) -> None:
        await self._channel.close()

    def __repr__(self) -> str:
        return f"Endpoint({self.url!r})"


def prompt_text(prompt: Sequence[ChatTurn]) -> str:
    """The text_input for a chat: the JSON message list that chat-model backends template.
    (pydantic's serialiser: ~5x faster than json.dumps of each turn's dict, ~80 µs a reply for a
    long conversation.)"""
    return _PROMPT.dump_json(list(prompt)).decode()


async def stream_text(
    endpoint: Endpoint,
    model: str,
    prompt: Sequence[ChatTurn],
    sampling: Mapping[str, Any],
    timeouts: Timeouts,
) -> AsyncGenerator[str, None]:
    """The generated text, piece by piece as Triton streams it (empty pieces are skipped)."""
    responses = _Responses(endpoint.stream(_request(model, prompt_text(prompt), sampling)), timeouts)
    try:
        while True:
            response = await responses.next()
            if response is None:  # Triton ends the stream once the request's final response is out
                return
            text = _text(response)
            if text:
                yield text
            parameters = response.parameters
            if FINAL_FLAG in parameters and parameters[FINAL_FLAG].bool_param:
                return
    finally:
        responses.close()


def _request(model: str, text: str, sampling: Mapping[str, Any]) -> service_pb2.ModelInferRequest:
    """The request in the vLLM backend's tensors, each of shape [1], in Triton's raw encoding."""
    tensor = service_pb2.ModelInferRequest.InferInputTensor
    return service_pb2.ModelInferRequest(
        model_name=model,
        inputs=[
            tensor(name="text_input", datatype="BYTES", shape=[1]),
            tensor(name="stream", datatype="BOOL", shape=[1]),
            tensor(name="sampling_parameters", datatype="BYTES", shape=[1]),
        ],
        raw_input_contents=[_bytes_element(text.encode()), b"\x01", _bytes_element(json.dumps(sampling).encode())],
    )


def _bytes_element(value: bytes) -> bytes:
    """One element of a BYTES tensor: its length (4 bytes, little-endian), then the bytes."""
    return _LENGTH.pack(len(value)) + value


class _Responses:
    """A stream call's responses, one at a time; the call is cancelled once the model has sent
    nothing for its timeout (the first token's, then the next token's) while one was awaited.

    One timer per stream, where a timeout around every read cost a timer (scheduled, then
    cancelled) per token. When it fires before the deadline it is re-armed for the deadline, or
    for the shorter timeout from now if that is sooner, so a deadline that moves closer (the
    first response came, its timeout is shorter) is never overshot. Only time spent waiting for a
    response counts: the reader's own time between responses (writing the token) is not the model's.
    """

    def __init__(self, call: Any, timeouts: Timeouts) -> None:
        self._call = call
        self._timeouts = timeouts
        self._shortest_s = min(timeouts.first_token_s, timeouts.token_s)
        self._heard = False  # a response came: later ones have the token timeout
        self._stalled = False
        self._waiting_since: float | None = None  # None while no response is awaited
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(self._shortest_s, self._check)

    async def next(self) -> service_pb2.ModelInferResponse | None:
        """The next response, or None at the end of the stream; every failure as InferenceError."""
        self._waiting_since = self._loop.time()
        try:
            response = await self._call.read()
        except asyncio.CancelledError:
            if self._stalled and not _current_task_cancelling():
                raise self._stall() from None
            raise
        except grpc.aio.AioRpcError as exc:
            message = f"inference server unavailable ({exc.code().name}): {exc.details()}"
            raise InferenceError(message, retryable=exc.code() in UNREACHABLE) from exc
        finally:
            self._waiting_since = None
        if response is grpc.aio.EOF:
            if self._stalled:
                raise self._stall()
            return None
        if response.error_message:
            raise InferenceError(f"the model failed: {response.error_message}")
        self._heard = True
        return response.infer_response

    def close(self) -> None:
        """Stop watching, and cancel the call: a no-op once the stream has ended; otherwise
        Triton cancels the request, so the model stops generating."""
        self._timer.cancel()
        self._call.cancel()

    @property
    def _timeout_s(self) -> float:
        return self._timeouts.token_s if self._heard else self._timeouts.first_token_s

    def _check(self) -> None:
        now = self._loop.time()
        if self._waiting_since is not None and now >= self._waiting_since + self._timeout_s:
            self._stalled = True
            self._call.cancel()  # ends the pending read
            return
        due = now + self._shortest_s
        if self._waiting_since is not None:
            due = min(due, self._waiting_since + self._timeout_s)
        self._timer = self._loop.call_at(due, self._check)

    def _stall(self) -> ModelStalled:
        return ModelStalled(f"the model sent nothing for {self._timeout_s:g}s")


def _text(response: service_pb2.ModelInferResponse) -> str:
    """The text_output tensor's elements (BYTES: each length-prefixed), joined and decoded."""
    for output, raw in zip(response.outputs, response.raw_output_contents, strict=False):
        if output.name == OUTPUT:
            return b"".join(_elements(raw)).decode(errors="replace")
    return ""


def _elements(raw: bytes) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(raw):
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
