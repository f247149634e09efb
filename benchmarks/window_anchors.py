"""What a chat that outgrows the model's window costs the model, with its prompt's start anchored
and without (`stream_processors.context_window`).

One conversation on `smollm2` (SmolLM2 on llama.cpp, this machine's CPU), one message at a time,
each prompt fitted to the window by context assembly's own `fit` and sent straight to Triton (the
bridge's gRPC stream), twice in the same run on the same questions: **sliding**, the prompt keeps
all that fits, so its start moves every turn once the chat is longer than the window; **anchored**,
the start stays put until it no longer fits. The model is greedy, so both chats are the same until
their prompts differ. Reported for the turns whose prompt left older turns out: TTFT p50 and
mean, the prompt tokens the model evaluated and took from its cache a turn (Triton's
`steno_prompt_tokens_total`), and how many turns the prompt kept. JSON in
benchmarks/results/window_anchors.json. Stack up; `python -m benchmarks.window_anchors`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.capacity import machine
from benchmarks.long_chats import MODEL, SYSTEM, TOPICS, direct, prompt_token_counts
from inference_bridge.triton_stream import Endpoint
from infra.settings import settings
from schemas.events import ChatTurn
from stream_processors import context_window, tokenizers

RESULTS = Path(__file__).parent / "results" / "window_anchors.json"
QUESTION = "Question {}: tell me about the history of {}, in detail, with dates and names."


@dataclass(frozen=True)
class Turn:
    prompt_tokens: int
    prompt_turns: int
    left_out: bool  # older turns did not fit
    ttft_ms: float
    cached: float
    evaluated: float


async def chat(endpoint: Endpoint, args: argparse.Namespace, anchored: bool) -> list[Turn]:
    """One conversation of `args.turns` messages; each prompt fitted as context assembly fits it."""
    model = settings.models[MODEL]
    tokenizer = tokenizers.load(model)
    ask = direct(endpoint, args.max_tokens)
    system, earlier, turns = ChatTurn(role="system", content=SYSTEM), list[ChatTurn](), list[Turn]()
    mode = "anchored" if anchored else "sliding"
    for turn in range(args.turns):
        number = turn + 1 if turn else f"1 of the {mode} chat"  # no cache holds the other chat's start
        new = ChatTurn(role="user", content=QUESTION.format(number, TOPICS[turn % len(TOPICS)]))
        budget = model.context_window - args.max_tokens
        prompt = context_window.fit(system, earlier, new, budget, tokenizer, anchored=anchored)
        before, started, first, pieces = prompt_token_counts(), time.perf_counter(), 0.0, list[str]()
        async for piece in ask([t.model_dump() for t in prompt.turns]):
            first = first or time.perf_counter() - started
            pieces.append(piece)
        after = prompt_token_counts()
        left_out = len(prompt.turns) < len(earlier) + 2
        turns.append(
            Turn(
                prompt.tokens,
                len(prompt.turns),
                left_out,
                round(first * 1000, 1),
                after.get("cached", 0.0) - before.get("cached", 0.0),
                after.get("evaluated", 0.0) - before.get("evaluated", 0.0),
            )
        )
        earlier += [new, ChatTurn(role="assistant", content="".join(pieces))]
        print(f"  {mode}: turn {turn + 1}, {turns[-1]}", flush=True)
    return turns


def summary(name: str, turns: list[Turn]) -> dict[str, Any]:
    beyond = [t for t in turns if t.left_out] or turns
    return {
        "mode": name,
        "turns_beyond_the_window": sum(t.left_out for t in turns),
        "ttft_p50_ms": round(statistics.median(t.ttft_ms for t in beyond)),
        "ttft_mean_ms": round(statistics.mean(t.ttft_ms for t in beyond)),
        "evaluated_per_turn": round(statistics.mean(t.evaluated for t in beyond)),
        "cached_per_turn": round(statistics.mean(t.cached for t in beyond)),
        "prompt_tokens_per_turn": round(statistics.mean(t.prompt_tokens for t in beyond)),
        "turns": [asdict(t) for t in turns],
    }


def table(modes: list[dict[str, Any]]) -> str:
    header = "mode      turns beyond  TTFT p50  TTFT mean  evaluated/turn  cached/turn  prompt tokens"
    rows = [
        f"{m['mode']:<9} {m['turns_beyond_the_window']:>12} {m['ttft_p50_ms']:>7} ms {m['ttft_mean_ms']:>7} ms"
        f" {m['evaluated_per_turn']:>15} {m['cached_per_turn']:>12} {m['prompt_tokens_per_turn']:>14}"
        for m in modes
    ]
    return "\n".join([header, *rows])


async def main(args: argparse.Namespace) -> None:
    print(f"python -m benchmarks.window_anchors --turns {args.turns} --max-tokens {args.max_tokens}\n{machine()}")
    endpoint = Endpoint(settings.triton.grpc_url)
    try:
        modes = [summary("sliding", await chat(endpoint, args, anchored=False))]
        modes.append(summary("anchored", await chat(endpoint, args, anchored=True)))
    finally:
        await endpoint.close()
    report = {"machine": machine(), "arguments": vars(args), "modes": modes}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(table(modes))
    print(f"JSON: {RESULTS}")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=30, help="messages in the conversation")
    parser.add_argument(
        "--max-tokens", type=int, default=128, help="each reply's cap (the window less it is the budget)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(arguments()))
