"""`scripted`: a deterministic stand-in for an LLM, for tests and benchmarks.

It speaks the vLLM-backend interface (see `vllm_interface`) and streams exactly the text it is
told to, at the pace it is told to, so tests can assert on exact tokens and benchmarks can model
a GPU fleet's latency without one. Sampling parameters (all optional):

    script    the text to stream; without it, a deterministic echo of text_input
    ttft_ms   delay before the first token (time to first token)
    itl_ms    delay before each later token (inter-token latency)
    max_tokens  stop after this many tokens
    stop      a text or list of texts: the reply ends before the first one (vLLM's `stop`)
    guided_decoding  {"json": schema} or {"json_object": true} (vLLM's): the reply is a JSON
              document instead, valid against the schema, its strings the echoed message
    echo_sampling  true: the reply is the request's sampling parameters as JSON (sorted keys),
              so a test sees what reached the model
    fail_after  fail the request (error response) once this many tokens were sent

The newest user message may set them for its own reply: a first line `scripted: {"itl_ms": 300}`
(a JSON object of the parameters above) is applied on top of the request's, and the rest of the
message is what gets echoed. That is how an end-to-end test gets one slow, scripted or failing
reply through the whole pipeline (API, moderation, context assembly, bridge) without reconfiguring
the bridge that every other test shares.

Tokens are whitespace-attached words: "Hello there, friend." streams as "Hello ", "there, ",
"friend."; joined, the tokens are exactly the script.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from typing import Any

from infra.models._common.constraints import cut_at_stop, guided_json, instance, stops
from infra.models._common.vllm_interface import GenerationRequest, ResponseStream, StreamingModel, chat_from_prompt

TOKEN = re.compile(r"\S+\s*|\s+")  # a word with its trailing space; leading space stands alone
DIRECTIVE = "scripted:"
CANCEL_POLL_S = 0.05  # a long delay is slept in slices so a cancellation ends it promptly


def tokenize(text: str) -> list[str]:
    """Split text into tokens that join back to exactly the text."""
    return TOKEN.findall(text)


def newest_user_message(prompt: str) -> str:
    users = [turn["content"] for turn in chat_from_prompt(prompt) if turn["role"] == "user"]
    return users[-1] if users else ""


def directed(message: str) -> tuple[dict[str, Any], str]:
    """The sampling parameters a message sets for its own reply (see the module docstring), and
    the message without that line."""
    first, _, rest = message.partition("\n")
    if not first.startswith(DIRECTIVE):
        return {}, message
    try:
        parameters = json.loads(first.removeprefix(DIRECTIVE))
    except json.JSONDecodeError as exc:
        raise ValueError(f"the `{DIRECTIVE}` line is not JSON: {exc}") from None
    if not isinstance(parameters, dict):
        raise ValueError(f"the `{DIRECTIVE}` line must hold a JSON object of sampling parameters")
    return parameters, rest


class TritonPythonModel(StreamingModel):
    """Streams a script token by token, honouring delays, limits and cancellation."""

    def generate(self, request: GenerationRequest, out: ResponseStream) -> None:
        received = request.sampling
        overrides, message = directed(newest_user_message(request.prompt))
        request = replace(request, sampling={**received, **overrides})
        tokens = tokenize(_text(request.sampling, received, message))[: request.get_int("max_tokens")]
        tokens = cut_at_stop(tokens, stops(request.sampling))
        ttft_s = request.get_float("ttft_ms", 0.0) / 1000
        itl_s = request.get_float("itl_ms", 0.0) / 1000
        fail_after = request.get_int("fail_after")
        for index, token in enumerate(tokens):
            if not _wait(ttft_s if index == 0 else itl_s, out):
                return
            if index == fail_after:
                raise RuntimeError(f"scripted failure after {index} tokens")
            out.send(token)


def _text(sampling: dict[str, Any], received: dict[str, Any], message: str) -> str:
    """What the reply says, before limits and stop texts cut it."""
    if sampling.get("echo_sampling"):
        return json.dumps(received, sort_keys=True)
    schema = guided_json(sampling)
    if schema is not None:
        return json.dumps(instance(schema, message))
    script = sampling.get("script")
    return f"You said: {message}" if script is None else str(script)


def _wait(seconds: float, out: ResponseStream) -> bool:
    """Sleep for `seconds`, returning False as soon as the client cancels."""
    deadline = time.monotonic() + seconds
    while not out.cancelled():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        time.sleep(min(remaining, CANCEL_POLL_S))
    return False
