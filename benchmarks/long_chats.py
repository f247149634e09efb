"""What a real model's long conversations cost: time to first token and the model's CPU a message,
turn by turn, with the model's KV cache reused between turns and without.

Several conversations take turns one message at a time (as users of a chat service do), each
turn's prompt the whole chat so far, on the `smollm2` model (SmolLM2 on llama.cpp, CPU). Three
phases in the same run, each on conversations of its own and the same questions:

- cold: straight to Triton, every prompt evaluated whole (a fresh system message each request,
  so no cache holds any of it): what every turn cost before the model kept caches per
  conversation (`infra/models/_common/cache_slots.py`), and the baseline for the cache;
- direct: straight to Triton, the chat as it grows (the bridge's own gRPC stream);
- steno: through steno's OpenAI-compatible API end to end (the openai SDK, streamed), which
  sends the whole chat each time as OpenAI clients do; steno's added time is steno - direct.

Reported for each phase: TTFT p50 by turn, the model's CPU (Triton's process tree) a message,
and the prompt tokens a message took from the cache and evaluated (Triton's
`steno_prompt_tokens_total`). JSON in benchmarks/results/long_chats.json. Stack up; run with
`python -m benchmarks.long_chats` (`make bench` runs it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam

from benchmarks.capacity import machine, root_pids, tree_cpu
from inference_bridge.triton_stream import Endpoint, Timeouts, stream_text
from infra.settings import settings
from ingest_api.auth import issue_token
from schemas.events import ChatTurn

RESULTS = Path(__file__).parent / "results" / "long_chats.json"
MODEL = "smollm2"
SYSTEM = "You are a helpful assistant."
QUESTIONS = [
    "Tell me about the history of {} in a few sentences.",
    "What else should I know about {}?",
    "Give me one surprising fact about {}.",
    "How would you explain {} to a child?",
]
TOPICS = ["Paris", "volcanoes", "the moon", "bread", "chess", "rivers", "trains", "bees"]

Chat = list[dict[str, str]]
Ask = Callable[[Chat], AsyncIterator[str]]


@dataclass
class Phase:
    name: str
    ttft_ms_by_turn: list[list[float]] = field(default_factory=list)
    messages: int = 0
    triton_cpu_s: float = 0.0
    prompt_tokens: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        per_message = max(self.messages, 1)
        return {
            "phase": self.name,
            "ttft_p50_ms_by_turn": [round(statistics.median(turn), 1) for turn in self.ttft_ms_by_turn],
            "triton_cpu_ms_per_message": round(self.triton_cpu_s / per_message * 1000, 1),
            "prompt_tokens_cached_per_message": round(self.prompt_tokens.get("cached", 0) / per_message, 1),
            "prompt_tokens_evaluated_per_message": round(self.prompt_tokens.get("evaluated", 0) / per_message, 1),
        }


def prompt_token_counts() -> dict[str, float]:
    """Triton's counters of the model's prompt tokens, by source (cached, evaluated)."""
    cfg = settings.triton
    body = httpx.get(f"http://{cfg.host}:{cfg.metrics_port}/metrics", timeout=5).text
    pattern = rf'steno_prompt_tokens_total\{{model="{MODEL}",source="(\w+)"\}} (\S+)'
    return {source: float(value) for source, value in re.findall(pattern, body)}


async def converse(phase: Phase, ask: Ask, conversations: int, turns: int, fresh_system: bool) -> None:
    """`conversations` chats, turn by turn in rotation, one message at a time."""
    nonce = uuid.uuid4().hex[:8]
    chats: list[Chat] = [[{"role": "system", "content": SYSTEM}] for _ in range(conversations)]
    for turn in range(turns):
        ttfts = []
        for index, chat in enumerate(chats):
            question = QUESTIONS[turn % len(QUESTIONS)].format(TOPICS[index % len(TOPICS)])
            chat.append({"role": "user", "content": f"({nonce}) {question}" if turn == 0 else question})
            if fresh_system:
                chat[0] = {"role": "system", "content": f"{SYSTEM} (request {uuid.uuid4().hex[:8]})"}
            started, first, pieces = time.perf_counter(), 0.0, []
            async for piece in ask(chat):
                first = first or time.perf_counter() - started
                pieces.append(piece)
            chat.append({"role": "assistant", "content": "".join(pieces)})
            ttfts.append(first * 1000)
        phase.ttft_ms_by_turn.append(ttfts)
        print(f"  {phase.name}: turn {turn + 1}, TTFT p50 {statistics.median(ttfts):.0f} ms", flush=True)
    phase.messages = conversations * turns


async def measured_phase(name: str, ask: Ask, args: argparse.Namespace, *, fresh_system: bool = False) -> Phase:
    phase = Phase(name)
    triton = root_pids()["triton"]
    cpu_before, tokens_before = sum(tree_cpu(triton).values()), prompt_token_counts()
    await converse(phase, ask, args.conversations, args.turns, fresh_system)
    phase.triton_cpu_s = sum(tree_cpu(triton).values()) - cpu_before
    phase.prompt_tokens = {k: v - tokens_before.get(k, 0.0) for k, v in prompt_token_counts().items()}
    return phase


def direct(endpoint: Endpoint, max_tokens: int) -> Ask:
    sampling = {"max_tokens": max_tokens, **settings.models[MODEL].sampling}

    def ask(chat: Chat) -> AsyncIterator[str]:
        turns = [ChatTurn.model_validate(message) for message in chat]
        return stream_text(endpoint, MODEL, turns, sampling, Timeouts(120, 60))

    return ask


def through_steno(client: openai.AsyncOpenAI, max_tokens: int) -> Ask:
    async def ask(chat: Chat) -> AsyncIterator[str]:
        chunks = await client.chat.completions.create(
            model=MODEL,
            messages=cast("list[ChatCompletionMessageParam]", chat),
            max_tokens=max_tokens,
            stream=True,
        )
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    return ask


def table(phases: list[dict[str, Any]]) -> str:
    turns = len(phases[0]["ttft_p50_ms_by_turn"])
    header = f"{'turn':>4} " + " ".join(f"{p['phase'] + ' TTFT p50':>18}" for p in phases)
    rows = [
        f"{turn + 1:>4} " + " ".join(f"{p['ttft_p50_ms_by_turn'][turn]:>15.0f} ms" for p in phases)
        for turn in range(turns)
    ]
    costs = [
        f"{p['phase']:>6}: model CPU {p['triton_cpu_ms_per_message']:.0f} ms a message, prompt tokens a message "
        f"{p['prompt_tokens_cached_per_message']:.0f} cached / {p['prompt_tokens_evaluated_per_message']:.0f} evaluated"
        for p in phases
    ]
    return "\n".join([header, *rows, "", *costs])


async def main(args: argparse.Namespace) -> None:
    print(
        f"python -m benchmarks.long_chats --conversations {args.conversations} --turns {args.turns}"
        f" --max-tokens {args.max_tokens}\n{machine()}"
    )
    endpoint = Endpoint(settings.triton.grpc_url)
    token = issue_token("bench-long-chats")
    client = openai.AsyncOpenAI(base_url=f"{settings.api.url}/v1", api_key=token, max_retries=0)
    try:
        phases = [
            await measured_phase("cold", direct(endpoint, args.max_tokens), args, fresh_system=True),
            await measured_phase("direct", direct(endpoint, args.max_tokens), args),
            await measured_phase("steno", through_steno(client, args.max_tokens), args),
        ]
    finally:
        await endpoint.close()
        await client.close()
    report: dict[str, Any] = {"machine": machine(), "arguments": vars(args), "phases": [p.summary() for p in phases]}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(table(report["phases"]))
    print(f"JSON: {RESULTS}")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=3, help="conversations taking turns")
    parser.add_argument("--turns", type=int, default=8, help="messages in each conversation")
    parser.add_argument("--max-tokens", type=int, default=32, help="each reply's cap")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(arguments()))
