"""`steno analytics` against the real Kafka: a realistic mix of events on scratch copies of the
conversation log and the token stream, the consumer run until it has committed the end of both,
then its `/metrics` scraped over HTTP; restarts resume after the commit, a reset recounts all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra import kafka_clients
from infra.kafka_clients import EventProducer
from infra.settings import settings
from projections.analytics.metrics import serve_metrics
from projections.analytics.service import PROCESSOR, Analytics
from projections.consuming import GroupInUseError, forget_committed_offsets
from schemas.events import DeadLetter
from schemas.topics import CONVERSATIONS, DEAD_LETTERS, TOKENS, Topic
from tests.event_mix import Conversation, realistic_mix
from tests.integration.log_io import committed_to_end, produce, produce_raw, read_all
from tests.integration.scratch import scratch_copies, scratch_group
from tests.integration.steno_client import until

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Topics:
    conversations: Topic
    tokens: Topic
    dead_letters: Topic


@pytest.fixture
def topics() -> Iterator[Topics]:
    with scratch_copies("analytics", [CONVERSATIONS, TOKENS, DEAD_LETTERS]) as copies:
        yield Topics(*copies)


@pytest.fixture
def group() -> Iterator[str]:
    with scratch_group("analytics") as group:
        yield group


Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class Metrics:
    url: str

    async def scrape(self) -> Scrape:
        async with httpx.AsyncClient() as client:
            response = await client.get(self.url)
        response.raise_for_status()
        families = text_string_to_metric_families(response.text)
        return {(s.name, frozenset(s.labels.items())): s.value for family in families for s in family.samples}


def value(scraped: Scrape, name: str, **labels: str) -> float:
    return scraped[(name, frozenset(labels.items()))]


@asynccontextmanager
async def analytics(group: str, topics: Topics) -> AsyncIterator[Metrics]:
    """The consumer in `group` with /metrics on a free port; once entered, it has read both topics to their end."""
    consumer, producer = kafka_clients.consumer(group), EventProducer()
    read = [topics.conversations, topics.tokens]
    reader = Analytics(consumer, producer, settings.analytics, read, topics.dead_letters)
    server, _ = serve_metrics(lambda: reader.latest, "127.0.0.1", 0)
    stop = asyncio.Event()
    task = asyncio.create_task(reader.run(stop))
    try:
        await until(lambda: asyncio.to_thread(committed_to_end, group, read), timeout_s=60)
        yield Metrics(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        stop.set()
        await task
        server.shutdown()
        server.server_close()
        consumer.close()
        producer.close()


async def write(topics: Topics, conversations: list[Conversation]) -> None:
    await produce(topics.conversations, [event for c in conversations for event in c.log])
    await produce(topics.tokens, [event for c in conversations for event in c.tokens])


async def test_metrics_show_the_figures_of_the_log_and_a_poison_pill_is_dead_lettered(
    topics: Topics, group: str
) -> None:
    mix = realistic_mix(datetime.now(UTC) - timedelta(seconds=20))
    poison = produce_raw(topics.conversations, mix[0].conversation_id, b"\x00\xffnot an event")
    await write(topics, mix)

    async with analytics(group, topics) as metrics:
        scraped = await metrics.scrape()

    assert value(scraped, "steno_messages_total") == 7
    assert value(scraped, "steno_messages_per_minute") == 7
    for outcome, count in {"completed": 3, "blocked": 2, "cancelled": 1, "failed": 1}.items():
        assert value(scraped, "steno_responses_total", outcome=outcome) == count
    assert value(scraped, "steno_blocked_messages_total", category="weapons") == 2
    assert value(scraped, "steno_blocked_ratio", category="malware") == pytest.approx(1 / 7)
    assert value(scraped, "steno_ttft_seconds", model="scripted", quantile="0.5") == pytest.approx(0.2)
    assert value(scraped, "steno_ttft_seconds", model="scripted", quantile="0.95") == pytest.approx(0.29)
    assert value(scraped, "steno_ttft_seconds", model="smollm2", quantile="0.5") == pytest.approx(0.4)
    assert value(scraped, "steno_tokens_per_second", model="scripted", quantile="0.5") == pytest.approx(100)
    assert value(scraped, "steno_tokens_per_second", model="smollm2", quantile="0.95") == pytest.approx(20)
    assert value(scraped, "steno_active_conversations") == 3
    assert value(scraped, "steno_events_total", type="TokenGenerated") == 30
    [letter] = read_all(topics.dead_letters)
    assert isinstance(letter, DeadLetter)
    assert (letter.processor, letter.source_topic, letter.source_offset) == (PROCESSOR, poison.topic(), poison.offset())


async def test_a_restart_resumes_after_its_commit_and_a_reset_recounts_the_whole_log(
    topics: Topics, group: str
) -> None:
    now = datetime.now(UTC)
    await write(topics, realistic_mix(now - timedelta(seconds=20)))
    async with analytics(group, topics) as metrics:
        assert value(await metrics.scrape(), "steno_messages_total") == 7
        with pytest.raises(GroupInUseError, match="stop its running instance"):
            forget_committed_offsets(group)

    later = Conversation(now)
    later.answered(1, "scripted", ttft_ms=100, tokens=4, itl_ms=10)
    await write(topics, [later])
    async with analytics(group, topics) as metrics:
        restarted = await metrics.scrape()
    assert value(restarted, "steno_messages_total") == 1  # only what came after the commit
    assert value(restarted, "steno_events_total", type="TokenGenerated") == 4

    forget_committed_offsets(group)
    async with analytics(group, topics) as metrics:
        reset = await metrics.scrape()
    assert value(reset, "steno_messages_total") == 8
    assert value(reset, "steno_events_total", type="TokenGenerated") == 34
