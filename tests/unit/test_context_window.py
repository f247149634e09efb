"""Prompt fitting: never over budget, newest turns first, the new message always present."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from infra.settings import ModelSettings, settings
from schemas.events import ChatTurn
from stream_processors import tokenizers
from stream_processors.context_window import PromptTooSmall, fit
from stream_processors.tokenizers import GgufTokenizer, RememberedCounts, Tokenizer, WordTokenizer

SYSTEM = ChatTurn(role="system", content="You are steno, a helpful and concise assistant.")
WORDS = WordTokenizer()


def conversation(turns: int) -> list[ChatTurn]:
    """Alternating user and assistant turns of varied lengths, each naming its index."""
    return [
        ChatTurn(
            role="user" if i % 2 == 0 else "assistant",
            content=f"turn {i}: " + " ".join(f"word{i}-{j}" for j in range(3 + (i * 7) % 40)),
        )
        for i in range(turns)
    ]


def measured(turns: list[ChatTurn], tokenizer: Tokenizer) -> int:
    return tokenizer.reply_primer_tokens + sum(tokenizer.turn_tokens(turn) for turn in turns)


def test_a_short_conversation_fits_whole() -> None:
    *earlier, new = conversation(5)

    prompt = fit(SYSTEM, earlier, new, budget=10_000, tokenizer=WORDS)

    assert prompt.turns == [SYSTEM, *earlier, new]
    assert prompt.tokens == measured(prompt.turns, WORDS)


@pytest.mark.parametrize("budget", [60, 61, 97, 200, 384, 1000])
def test_a_long_conversation_never_overflows_and_keeps_the_newest_turns(budget: int) -> None:
    *earlier, new = conversation(500)

    prompt = fit(SYSTEM, earlier, new, budget=budget, tokenizer=WORDS)

    assert prompt.tokens == measured(prompt.turns, WORDS) <= budget
    assert prompt.turns[0] == SYSTEM and prompt.turns[-1] == new
    kept = prompt.turns[1:-1]
    assert kept == earlier[len(earlier) - len(kept) :]  # an unbroken run back from the newest
    next_older = earlier[len(earlier) - len(kept) - 1]
    assert prompt.tokens + WORDS.turn_tokens(next_older) > budget  # and as long as fits


def grown_prompts(turns: int, budget: int, anchored: bool) -> list[list[ChatTurn]]:
    """The prompt of each user turn of a chat as it grows, the turns before it answered."""
    chat = conversation(turns)
    return [
        fit(SYSTEM, chat[:n], chat[n], budget=budget, tokenizer=WORDS, anchored=anchored).turns
        for n in range(0, turns, 2)
    ]


def starts(prompts: list[list[ChatTurn]]) -> int:
    """How many times the prompt's first turn after the system prompt changed."""
    return sum(1 for before, after in itertools.pairwise(prompts) if before[1] != after[1])


@pytest.mark.parametrize(("budget", "fewer"), [(300, 1.5), (600, 2.5), (1200, 4), (2000, 8)])
def test_an_anchored_prompt_keeps_its_start_so_the_last_prompt_is_the_next_ones_beginning(
    budget: int, fewer: float
) -> None:
    """From ~6 exchanges in the window to ~40: the start moves ever more rarely (measured: 194 →
    110, 188 → 64, 159 → 35, 145 → 16 of 199)."""
    anchored, plain = grown_prompts(400, budget, anchored=True), grown_prompts(400, budget, anchored=False)

    assert starts(anchored) * fewer < starts(plain)  # the plain one moves nearly every turn
    for before, after in itertools.pairwise(anchored):
        if before[1] == after[1]:  # the same start: the last prompt (and its reply) begins this one
            assert after[: len(before)] == before


@pytest.mark.parametrize("budget", [60, 97, 300, 1000])
def test_an_anchored_prompt_fits_and_keeps_at_least_half_the_room_from_a_user_turn(budget: int) -> None:
    chat = conversation(500)
    for n in range(100, 500, 2):
        earlier, new = chat[:n], chat[n]
        longest = fit(SYSTEM, earlier, new, budget=budget, tokenizer=WORDS)
        prompt = fit(SYSTEM, earlier, new, budget=budget, tokenizer=WORDS, anchored=True)

        assert prompt.tokens == measured(prompt.turns, WORDS) <= budget
        assert prompt.turns[0] == SYSTEM and prompt.turns[-1] == new
        kept = prompt.turns[1:-1]
        assert kept == earlier[len(earlier) - len(kept) :] == longest.turns[len(longest.turns) - len(kept) - 1 : -1]
        if kept != longest.turns[1:-1]:
            room = budget - measured([SYSTEM, new], WORDS)
            assert kept[0].role == "user" and prompt.tokens - measured([SYSTEM, new], WORDS) >= room / 2


def test_a_conversation_that_fits_whole_is_not_cut_at_an_anchor() -> None:
    *earlier, new = conversation(40)

    prompt = fit(SYSTEM, earlier, new, budget=10_000, tokenizer=WORDS, anchored=True)

    assert prompt.turns == [SYSTEM, *earlier, new]


def test_a_new_message_too_long_alone_loses_its_beginning() -> None:
    new = ChatTurn(role="user", content=" ".join(f"w{i}" for i in range(1000)) + " so what is the answer?")
    budget = 100

    prompt = fit(SYSTEM, conversation(4), new, budget=budget, tokenizer=WORDS)

    assert prompt.turns[0] == SYSTEM and len(prompt.turns) == 2
    cut = prompt.turns[1]
    assert cut.role == "user" and new.content.endswith(cut.content)
    assert cut.content.endswith("so what is the answer?")
    assert prompt.tokens == measured(prompt.turns, WORDS) == budget


def test_a_budget_without_room_for_the_message_is_refused() -> None:
    new = ChatTurn(role="user", content="hello")
    with pytest.raises(PromptTooSmall):
        fit(SYSTEM, [], new, budget=WORDS.turn_tokens(SYSTEM) + 1, tokenizer=WORDS)


def test_the_real_model_tokenizer_counts_the_rendered_prompt_exactly() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by `make up`")
    tokenizer = tokenizers.load(settings.models["smollm2"])
    model = settings.models["smollm2"]
    budget = model.context_window - model.max_tokens
    *earlier, new = conversation(400)

    prompt = fit(SYSTEM, earlier, new, budget=budget, tokenizer=tokenizer)

    assert len(prompt.turns) > 3 and prompt.turns[-1] == new
    assert prompt.tokens == rendered_tokens(tokenizer, prompt.turns) <= budget
    assert prompt.tokens + tokenizer.turn_tokens(earlier[-(len(prompt.turns) - 1)]) > budget


def test_the_real_model_tokenizer_cuts_a_huge_message_to_fit() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by `make up`")
    tokenizer = tokenizers.load(settings.models["smollm2"])
    new = ChatTurn(role="user", content="Ünïcödé ✓ " * 3000 + "the end")

    prompt = fit(SYSTEM, [], new, budget=300, tokenizer=tokenizer)

    assert prompt.tokens == rendered_tokens(tokenizer, prompt.turns) <= 300
    assert prompt.turns[-1].content.endswith("the end")


def rendered_tokens(tokenizer: RememberedCounts, turns: list[ChatTurn]) -> int:
    """The whole prompt as llama.cpp's chat completion renders and tokenizes it."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    assert isinstance(tokenizer.uncached, GgufTokenizer)
    llama = tokenizer.uncached._llama
    formatter = Jinja2ChatFormatter(
        llama.metadata["tokenizer.chat_template"], eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    text = formatter(messages=[turn.model_dump() for turn in turns]).prompt  # type: ignore[misc]  # llama-cpp wants its per-role TypedDicts; a ChatTurn dump is one
    return len(llama.tokenize(text.encode(), add_bos=True, special=True))


def test_the_real_model_tokenizer_counts_as_llama_cpp_tokenizes() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by `make up`")
    tokenizer = tokenizers.load(settings.models["smollm2"]).uncached
    assert isinstance(tokenizer, GgufTokenizer)

    for text in ["", "hi", "Ünïcödé ✓ " * 50, "<|im_start|>user\nhello<|im_end|>\n"]:
        assert tokenizer._count(text) == len(tokenizer._llama.tokenize(text.encode(), add_bos=False, special=True))


class CountedWords(WordTokenizer):
    """The word tokenizer, noting each turn it was asked to count."""

    def __init__(self) -> None:
        self.asked: list[ChatTurn] = []

    def turn_tokens(self, turn: ChatTurn) -> int:
        self.asked.append(turn)
        return super().turn_tokens(turn)


def test_a_turn_is_counted_once_and_its_count_remembered() -> None:
    words = CountedWords()
    remembered = RememberedCounts(words, size=10)
    turns = conversation(4)

    first = [remembered.turn_tokens(turn) for turn in turns]
    again = [remembered.turn_tokens(ChatTurn(role=turn.role, content=turn.content)) for turn in turns]

    assert first == again == [WORDS.turn_tokens(turn) for turn in turns]
    assert words.asked == turns
    other_role = ChatTurn(role="assistant", content=turns[0].content)
    remembered.turn_tokens(other_role)
    assert words.asked[-1] == other_role  # a turn is its role and its content


def test_the_least_recently_used_count_is_forgotten_first() -> None:
    words = CountedWords()
    remembered = RememberedCounts(words, size=2)
    a, b, c = conversation(3)

    for turn in (a, b, a, c):  # c pushes out b, used before a
        remembered.turn_tokens(turn)
    words.asked.clear()
    for turn in (a, c, b):
        remembered.turn_tokens(turn)

    assert words.asked == [b]


def test_a_gguf_tokenizer_reads_the_file_its_model_settings_name(tmp_path: Path) -> None:
    unset = ModelSettings(context_window=64, max_tokens=8, tokenizer="gguf")
    with pytest.raises(ValueError, match="needs the model's file: set `gguf_file`"):
        tokenizers.load(unset)
    with pytest.raises(ValueError, match=r"not-a-model\.gguf"):  # llama.cpp refuses the named file itself
        tokenizers.load(unset.model_copy(update={"gguf_file": tmp_path / "not-a-model.gguf"}))
