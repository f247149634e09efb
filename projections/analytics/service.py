"""`steno analytics`: a consumer group on the conversation log and the token stream that keeps
live figures, serves them on `/metrics` and, in a terminal, draws them.

The figures live in memory, so "the effect" a commit waits for is the batch being counted: a
restart resumes after the last counted batch (its totals start again from zero, as Prometheus
counters may), and `--reset` forgets the group's offsets so it recounts the whole retained log.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Sequence
from wsgiref.simple_server import WSGIServer

from confluent_kafka import Consumer, Message
from rich.console import Console
from rich.logging import RichHandler

from infra import kafka_clients
from infra.kafka_clients import EventProducer
from infra.settings import AnalyticsSettings, settings
from projections.analytics.figures import Figures, Snapshot
from projections.analytics.metrics import serve_metrics
from projections.analytics.view import show
from projections.consuming import (
    commit_handled,
    decode_event,
    forget_committed_offsets,
    log_partitions,
    send_to_dead_letters,
    valid_records,
)
from schemas.topics import CONVERSATIONS, DEAD_LETTERS, TOKENS, Topic

GROUP = "steno-analytics"
PROCESSOR = "analytics"
TOPICS = (CONVERSATIONS, TOKENS)
BATCH_SIZE = 1000
POLL_S = 0.5  # also how often the windows slide while the log is quiet

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Analytics:
    """Counts every event of `topics` into `Figures`; `latest` is the newest snapshot of them.

    The topics are parameters so that tests can run it on scratch copies of the log.
    """

    def __init__(
        self,
        consumer: Consumer,
        producer: EventProducer,
        config: AnalyticsSettings,
        topics: Sequence[Topic] = TOPICS,
        dead_letters: Topic = DEAD_LETTERS,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._topics = topics
        self._dead_letters = dead_letters
        self._figures = Figures(config)
        self.latest: Snapshot = self._figures.snapshot(now_ms())

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, committing each batch once it is counted."""
        self._consumer.subscribe(
            [topic.name for topic in self._topics],
            on_assign=log_partitions("assigned"),
            on_revoke=log_partitions("revoked"),
        )
        while not stop.is_set():
            records = await asyncio.to_thread(kafka_clients.next_batch, self._consumer, POLL_S, BATCH_SIZE)
            valid = valid_records(records)
            for record in valid:
                await self._count(record)
            self.latest = self._figures.snapshot(now_ms())
            await commit_handled(self._consumer, valid)

    async def _count(self, record: Message) -> None:
        try:
            self._figures.apply(decode_event(record), now_ms())
        except Exception as exc:  # rule 7: whatever the record did, the partition moves on
            reason = f"{type(exc).__name__}: {exc}"
            await send_to_dead_letters(self._producer, self._dead_letters, record, PROCESSOR, reason)


async def serve(stop: asyncio.Event, port: int, console: Console | None) -> None:
    """Count the live log, serve `/metrics` on `port`, and draw the figures on `console` if given."""
    producer = EventProducer()
    consumer = kafka_clients.consumer(GROUP)
    analytics = Analytics(consumer, producer, settings.analytics)
    try:
        server = _metrics_server(lambda: analytics.latest, port)
        try:
            views = [show(lambda: analytics.latest, "steno analytics", stop, console)] if console else []
            await asyncio.gather(analytics.run(stop), *views)
        finally:
            server.shutdown()
            server.server_close()
    finally:
        consumer.close()  # leaves the group now, so its partitions move on without waiting for a timeout
        producer.close()


def _metrics_server(latest: Callable[[], Snapshot], port: int) -> WSGIServer:
    host = settings.analytics.host
    try:
        server, _ = serve_metrics(latest, host, port)
    except OSError as exc:
        raise SystemExit(f"steno analytics: cannot serve /metrics on {host}:{port} ({exc}); choose --port") from exc
    log.info("analytics as consumer group %s; metrics on http://%s:%d/metrics", GROUP, host, server.server_port)
    return server


def run(reset: bool = False, port: int | None = None, view: bool = True) -> None:
    """The operator's entry point (`steno analytics`); stops on SIGINT or SIGTERM."""
    port = settings.analytics.port if port is None else port
    console = Console() if view else None
    if console:  # log lines scroll above the live view instead of tearing it
        handler = RichHandler(console=console)  # it prints the time, level and place itself
        logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if reset:
        forget_committed_offsets(GROUP)  # raises GroupInUseError while another instance consumes
        log.warning("consumer group %s reset: counting the log from its beginning", GROUP)
    asyncio.run(_until_signalled(port, console))


async def _until_signalled(port: int, console: Console | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(stop, port, console)
