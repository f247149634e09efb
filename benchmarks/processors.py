"""How much latency the stream processors add before a model sees a message.

- moderation: `Moderator.classify` alone, per message (classifier + rules), in this process;
- admission on the real Kafka, Redis and Cassandra, from the records' CreateTime stamps:
  MessageSubmitted → MessageAccepted (Faust fetch + moderation: MessageAccepted is produced as
  soon as it passes), MessageAccepted → InferenceRequested (waiting for the active context's
  watermark + reading it + fitting the prompt, and MessageAccepted's ack, which the request
  waits for), and both together.

The app runs in this process on scratch topics (processors_harness); the projection that feeds
the active context runs in another process, as in production. Each conversation sends
`--exchanges` messages one after another, a reply (ResponseCompleted, as the bridge would write
it) between them, so later prompts carry history; `--concurrency` conversations run at once.
Each level also prints this process's CPU a message: the app's, with the harness's producer and
log reader beside it (the same in every run, so runs compare).
Run with `.venv/bin/python -m benchmarks.processors [--exchanges N]` (stack up).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
import uuid
from typing import Any

from infra.kafka_clients import EventProducer
from infra.settings import settings
from projections.consuming import forget_committed_offsets
from schemas.events import (
    ConversationStarted,
    InferenceRequested,
    MessageAccepted,
    MessageSubmitted,
    ResponseCompleted,
    Usage,
    new_id,
)
from schemas.topics import Topic
from stream_processors.app import Topics, create_app
from stream_processors.moderation import Moderator
from tests.integration.processors_harness import LogTail, project, scratch_topics

RUN = f"bench-processors-{uuid.uuid4().hex[:8]}"
SENTENCES = [
    "What is the capital of France?",
    "Can you summarise the plot of Hamlet in three sentences, please?",
    "Write a haiku about the sea at night and the lights of distant ships.",
    "How do I reverse a linked list in Python without recursion?",
    "Explain the difference between TCP and UDP like I am five years old.",
]


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else values[0]


def summary(name: str, values: list[float]) -> str:
    return f"{name:<34} n={len(values):<5} p50={percentile(values, 50):7.2f} ms  p95={percentile(values, 95):7.2f} ms"


def moderation_latency(messages: int) -> list[float]:
    moderator = Moderator(settings.moderation)
    timings = []
    for i in range(messages):
        text = " ".join(SENTENCES[(i + k) % len(SENTENCES)] for k in range(1 + i % 4))
        began = time.perf_counter()
        moderator.classify(text)
        timings.append((time.perf_counter() - began) * 1000)
    return timings


async def conversation(
    model: str, exchanges: int, producer: EventProducer, log: LogTail, topics: Topics
) -> list[tuple[int, int, int]]:
    """(submitted, accepted, requested) CreateTimes of each message of one conversation."""
    conversation_id, user_id = new_id(), f"user-{RUN}"
    await producer.send(topics.conversations, ConversationStarted(conversation_id=conversation_id, user_id=user_id))
    stamps = []
    for i in range(exchanges):
        ids: dict[str, Any] = {
            "conversation_id": conversation_id,
            "user_id": user_id,
            "message_id": new_id(),
            "response_id": new_id(),
        }
        await producer.send(
            topics.conversations, MessageSubmitted(**ids, content=SENTENCES[i % len(SENTENCES)], model=model)
        )
        [submitted] = await log.of(ids["response_id"], MessageSubmitted)
        [accepted] = await log.of(ids["response_id"], MessageAccepted)
        [requested] = await log.of(ids["response_id"], InferenceRequested)
        stamps.append((submitted.timestamp_ms, accepted.timestamp_ms, requested.timestamp_ms))
        reply = ResponseCompleted(
            **ids,
            text="Sure: " + SENTENCES[(i + 1) % len(SENTENCES)],
            finish_reason="stop",
            usage=Usage(prompt_tokens=1, completion_tokens=1),
        )
        await producer.send(topics.conversations, reply)
    return stamps


def run_projection(conversations_topic: Topic, namespace: str) -> None:
    asyncio.run(project(conversations_topic, namespace, asyncio.Event()))


async def hops(models: list[str], concurrency: list[int], exchanges: int) -> None:
    with scratch_topics(RUN) as topics:
        projection = multiprocessing.get_context("spawn").Process(
            target=run_projection, args=(topics.conversations, RUN)
        )
        projection.start()
        app = create_app(f"test-{RUN}", topics, cache_namespace=RUN, offset_reset="earliest")
        producer, log = EventProducer(), LogTail([topics.conversations, topics.inference_requests])
        await app.start()
        try:
            for model in models:
                for level in concurrency:
                    cpu_before = time.process_time()
                    runs = await asyncio.gather(
                        *(conversation(model, exchanges, producer, log, topics) for _ in range(level))
                    )
                    stamps = [s for run in runs for s in run]
                    cpu_ms = (time.process_time() - cpu_before) * 1000 / len(stamps)
                    print(f"--- model {model}, {level} conversation(s) at once, {exchanges} messages each")
                    print(f"{'CPU of this process a message':<34} {cpu_ms:.2f} ms")
                    print(summary("submitted -> accepted", [float(a - s) for s, a, _ in stamps]))
                    print(summary("accepted -> inference requested", [float(r - a) for _, a, r in stamps]))
                    print(summary("submitted -> inference requested", [float(r - s) for s, _, r in stamps]))
        finally:
            await app.stop()
            producer.close()
            log.close()
            projection.terminate()
            projection.join()
            forget_committed_offsets(f"test-{RUN}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["scripted", "smollm2"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--exchanges", type=int, default=10, help="messages in each conversation")
    args = parser.parse_args()
    print(summary("moderation (classify) per message", moderation_latency(500)))
    asyncio.run(hops(args.models, args.concurrency, args.exchanges))


if __name__ == "__main__":
    main()
