"""The tensor interface of Triton's vLLM backend, shared by steno's local Python-backend models.

steno's inference bridge talks to the local Triton exactly as it would to a production fleet
running the vLLM backend, so that pointing it at one needs no code change. This module holds
that contract once, so the local models (`scripted`, `smollm2`) cannot drift from it or from
each other.

Inputs (as in the vLLM backend):
    text_input           BYTES [1]  the prompt
    stream               BOOL  [1]  optional; false (vLLM's default) means one response
    sampling_parameters  BYTES [1]  optional JSON object, e.g. {"max_tokens": 64}; numbers may be
                                    sent as strings, as vLLM accepts them
Output:
    text_output          BYTES [1]  new text (a delta) when streaming, the whole text otherwise

Response protocol (the model is decoupled; every request gets exactly one final response):
    stream=true   one response per token, then a response whose text_output is "" and which
                  carries TRITONSERVER_RESPONSE_COMPLETE_FINAL (clients see the response
                  parameter `triton_final_response` = true). The final response is a real one,
                  not a null one, so clients need not ask for empty final responses.
                  (Triton's vLLM backend flags its last token instead: a client should treat
                  text in a final response as text, which covers both.)
    stream=false  one response with the whole text, flagged final.
    error         one error response, flagged final (after any tokens already streamed). A gRPC
                  stream client gets it as an error without a result, hence without the
                  `triton_final_response` parameter: an error ends the request.
    cancelled     generation stops before its next token; the final flag still goes out so that
                  Triton releases the request.

Clients should read a stream until the server ends it rather than drop it on the final
response: Triton 2.51 can then fail to unload the model at shutdown (it waits out
--exit-timeout-secs).
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
CANCEL_CHECK_INTERVAL_S = 0.05  # see ResponseStream.cancelled
N = TypeVar("N", int, float)


@dataclass(frozen=True)
class GenerationRequest:
    """One request's inputs, decoded from Triton tensors into plain Python."""

    prompt: str
    stream: bool = False
    sampling: dict[str, Any] = field(default_factory=dict)

    def get_int(self, key: str, default: int | None = None) -> int | None:
        """An integer sampling parameter; vLLM clients may send numbers as strings."""
        value = self._number(key, int)
        return default if value is None else value

    def get_float(self, key: str, default: float) -> float:
        """A float sampling parameter; vLLM clients may send numbers as strings."""
        value = self._number(key, float)
        return default if value is None else value

    def _number(self, key: str, kind: type[N]) -> N | None:
        value = self.sampling.get(key)
        if value is None:
            return None
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"sampling parameter {key!r} is not a number: {value!r}") from None


def parse_request(request: pb_utils.InferenceRequest) -> GenerationRequest:
    """Decode the vLLM-backend input tensors; raises ValueError on a malformed request."""
    prompt = _scalar(request, "text_input")
    if not isinstance(prompt, str):
        raise ValueError("text_input is required")
    return GenerationRequest(
        prompt=prompt,
        stream=bool(_scalar(request, "stream") or False),
        sampling=_sampling_parameters(_scalar(request, "sampling_parameters")),
    )


def chat_from_prompt(prompt: str) -> list[dict[str, str]]:
    """The chat in a text_input: a JSON list of {"role", "content"} messages, as steno's bridge
    sends (and vLLM's chat frontends template), or plain text taken as one user message."""
    try:
        value = json.loads(prompt)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, list) and value and all(_is_message(m) for m in value):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
    return [{"role": "user", "content": prompt}]


def _is_message(value: Any) -> bool:
    return isinstance(value, dict) and "role" in value and "content" in value


def _scalar(request: pb_utils.InferenceRequest, name: str) -> Any:
    """The single element of an optional [1]-shaped input; bytes decoded as UTF-8."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    value = tensor.as_numpy().reshape(-1)[0]
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _sampling_parameters(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"sampling_parameters is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("sampling_parameters must be a JSON object")
    return value


def _text_response(text: str) -> pb_utils.InferenceResponse:
    output = pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=np.object_))
    return pb_utils.InferenceResponse(output_tensors=[output])


class ResponseStream:
    """Sends one request's output by the protocol in the module docstring.

    It remembers whether the final response went out, so that a model cannot send two
    (Triton rejects the second) or none (Triton would hold the request forever).
    """

    def __init__(self, sender: pb_utils.InferenceResponseSender, stream: bool) -> None:
        self._sender = sender
        self._stream = stream
        self._parts: list[str] = []
        self._closed = False
        self._cancelled = False
        self._next_cancel_check = 0.0
        self.tokens = 0
        # (from the model's cache, evaluated): how much of the prompt the model already held, for
        # a model that keeps one (smollm2); None for one that does not say
        self.prompt_tokens: tuple[int, int] | None = None

    def cancelled(self) -> bool:
        """Whether the client cancelled the request; models check it before each token.

        Asking Triton is an IPC round trip (the stub and the server each switch context), so
        the answer is reused for CANCEL_CHECK_INTERVAL_S: a cancellation is seen within that
        time (or one token, for slower streams). At 5 ms, 16 instant `scripted` streams asked
        ~0.3 times a token, a third of the stub's CPU per token (~35 -> ~23 µs at 50 ms, and
        the server's ~40 -> ~35 µs); 50 ms is still well under what a user notices.
        """
        now = time.monotonic()
        if not self._cancelled and now >= self._next_cancel_check:
            self._cancelled = self._sender.is_cancelled()
            self._next_cancel_check = now + CANCEL_CHECK_INTERVAL_S
        return self._cancelled

    def send(self, text: str) -> None:
        """Emit one token (streaming) or keep it for the single response (not streaming)."""
        self.tokens += 1
        if self._stream:
            self._sender.send(_text_response(text))
        else:
            self._parts.append(text)

    def finish(self) -> None:
        """Close the request normally (also after a cancellation)."""
        self._close(_text_response("" if self._stream else "".join(self._parts)))

    def fail(self, message: str) -> None:
        """Close the request with an error; a no-op if it is already closed."""
        self._close(pb_utils.InferenceResponse(error=pb_utils.TritonError(message)))

    def _close(self, response: pb_utils.InferenceResponse) -> None:
        if self._closed:
            return
        self._closed = True
        self._sender.send(response, flags=FINAL)


class Metrics:
    """Per-model counters on Triton's Prometheus endpoint (http://<host>:<metrics port>/metrics).

    steno_requests_total{model, outcome}: outcome is completed, cancelled or failed.
    steno_tokens_total{model}: tokens generated, counted when a request ends (one IPC call per
    request, not per token). Besides operations, this is how tests see that a client's
    cancellation reached the model and stopped its generation.
    steno_prompt_tokens_total{model, source}: prompt tokens, source `cached` (already in the
    model's KV cache from an earlier request) or `evaluated`, for models that tell.

    Updates are serialised: the Python backend of Triton 2.51 aborts the whole server
    (boost::interprocess::lock_exception) when worker threads update metrics concurrently.
    """

    OUTCOMES = ("completed", "cancelled", "failed")

    def __init__(self, model: str) -> None:
        requests = pb_utils.MetricFamily(
            name="steno_requests_total",
            description="Generation requests served, by outcome",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        tokens = pb_utils.MetricFamily(
            name="steno_tokens_total",
            description="Tokens generated",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self._requests = {
            outcome: requests.Metric(labels={"model": model, "outcome": outcome}) for outcome in self.OUTCOMES
        }
        self._tokens = tokens.Metric(labels={"model": model})
        prompt = pb_utils.MetricFamily(
            name="steno_prompt_tokens_total",
            description="Prompt tokens, taken from the model's cache or evaluated",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self._prompt = [prompt.Metric(labels={"model": model, "source": source}) for source in ("cached", "evaluated")]
        self._families = [requests, tokens, prompt]  # a Metric must not outlive its family
        self._lock = threading.Lock()

    def record(self, outcome: str, out: ResponseStream) -> None:
        """Count a request that ended; its outcome last, so that a reader who sees the request
        counted sees its tokens counted too."""
        with self._lock:
            if out.tokens:
                self._tokens.increment(out.tokens)
            for metric, count in zip(self._prompt, out.prompt_tokens or (), strict=False):
                if count:
                    metric.increment(count)
            self._requests[outcome].increment(1)

    def close(self) -> None:
        """Drop the metrics before their families, the order the Python backend requires."""
        with self._lock:
            self._requests.clear()
            del self._tokens
            self._prompt.clear()
            self._families.clear()


class StreamingModel(ABC):
    """Base of a decoupled model that serves each request on a worker thread.

    Why threads: the Python backend calls `execute` with one batch at a time, so a model that
    generated inside `execute` would serve streams one after another. `execute` here only hands
    requests to a pool and returns, so up to `workers` streams (model config parameter) are in
    flight at once; further requests wait in arrival order.
    """

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                f"{args['model_name']} streams, so its config needs model_transaction_policy {{ decoupled: true }}"
            )
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.logger = pb_utils.Logger
        self.workers = int(parameters.get("workers", "64"))
        self.setup(parameters)
        self._metrics = Metrics(args["model_name"])
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=args["model_name"])

    def setup(self, parameters: dict[str, str]) -> None:  # noqa: B027  (optional hook: `scripted` loads nothing)
        """Load what generation needs; runs once before the model reports ready."""

    @abstractmethod
    def generate(self, request: GenerationRequest, out: ResponseStream) -> None:
        """Produce the response text through `out`, stopping early once `out.cancelled()`."""

    def execute(self, requests: list[pb_utils.InferenceRequest]) -> None:
        for request in requests:
            self._pool.submit(self._serve, request)
        return  # decoupled: responses go through each request's sender

    def _serve(self, request: pb_utils.InferenceRequest) -> None:
        sender = request.get_response_sender()
        out = ResponseStream(sender, stream=False)
        try:
            if self._stopping.is_set():
                raise RuntimeError("the model is unloading")
            parsed = parse_request(request)
            out = ResponseStream(sender, stream=parsed.stream)
            if not out.cancelled():
                self.generate(parsed, out)
            outcome = "cancelled" if out.cancelled() else "completed"
            out.finish()
        except Exception as exc:  # the client gets the reason; the worker lives on
            outcome = "failed"
            self._report_failure(out, exc)
        self._metrics.record(outcome, out)

    def _report_failure(self, out: ResponseStream, exc: Exception) -> None:
        self.logger.log_warn(f"request failed: {type(exc).__name__}: {exc}")
        try:
            out.fail(f"{type(exc).__name__}: {exc}")
        except Exception as send_exc:  # e.g. the stream is already gone
            self.logger.log_warn(f"could not report the failure: {send_exc}")

    def finalize(self) -> None:
        """Fail requests still queued, let running generations end, then stop the threads."""
        self._stopping.set()
        self._pool.shutdown(wait=True)
        self._metrics.close()
