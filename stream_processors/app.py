"""The Faust app: one agent over the conversation log, admission (moderation, then context assembly).

The agent runs one actor per partition (`isolated_partitions`): a conversation's events stay in
order, and an assembly waiting for the active context to catch up (rule 3) holds back only its
own partition. Moderation and context assembly were two agents, the second reading each
MessageAccepted back from the log; one step doing both (`stream_processors.admission_step`)
spares every message that round trip and a second dispatch of every record.

Faust's own producer is not used. It makes its aiokafka producer idempotent only in
exactly-once mode (`Producer._settings_extra`), which would also make every send transactional;
steno's shared `EventProducer` is idempotent with acks=all (rule 1), chooses partitions with
`schemas.topics.partition_for`, and resolves a future on each broker acknowledgement (rule 2).
Faust creates no topics either: steno creates them itself with their partition counts, so
internal topic declaration and the leader-election topic are switched off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import faust
from cassandra.cluster import Cluster
from redis.asyncio import Redis

from infra import cassandra
from infra.kafka_clients import EventProducer, Record, client_id
from infra.membership import CHECK_EVERY_S, GroupCheck, GroupWatchdog
from infra.settings import settings
from projections import active_context
from projections.active_context import ActiveContext
from projections.generations import Generations
from projections.history import History
from projections.live import LiveContext, LiveHistory
from projections.watermark_signals import WatermarkSignals
from schemas.topics import CONVERSATIONS, DEAD_LETTERS, INFERENCE_REQUESTS, TOKENS, Topic
from stream_processors import tokenizers
from stream_processors.admission_step import AdmissionStep
from stream_processors.committed_offsets import CommittedOffsetsTransport
from stream_processors.context_assembly import ContextAssembler
from stream_processors.conversation import ConversationReader
from stream_processors.delivery_window import DeliveryWindow
from stream_processors.membership_watchdog import StopDeadline
from stream_processors.moderation import Moderator
from stream_processors.processor import Outputs, Processor

APP_ID = "steno-processors"  # also the consumer group id, which `make up` health-checks
UNSETTLED_RECORDS = 1000  # per partition: records handled, not yet acked (their events or an earlier one's unsent)


@dataclass(frozen=True)
class Topics:
    """The topics the app reads and writes; tests run it on scratch copies of them."""

    conversations: Topic = CONVERSATIONS
    inference_requests: Topic = INFERENCE_REQUESTS
    tokens: Topic = TOKENS
    dead_letters: Topic = DEAD_LETTERS


def create_app(
    app_id: str = APP_ID,
    topics: Topics = Topics(),
    cache_namespace: str | None = None,
    offset_reset: str = "earliest",
) -> faust.App:
    """A worker-ready app with its clients open.

    Context is read from the live generation of the views (`projections.generations`), or, when
    tests name a scratch `cache_namespace`, from that cache beside the configured keyspace's history.
    """
    app = _faust_app(app_id, offset_reset)
    for model in settings.models.values():
        tokenizers.load(model)  # fail at start, not on the first message, if one can't load
    producer = EventProducer()
    redis = active_context.connect()
    cluster, _ = cassandra.connect()
    signals = WatermarkSignals(redis)
    reader = ConversationReader(
        *_context_readers(cluster, redis, cache_namespace), settings.context.watermark_wait_s, signals
    )
    admission = _admission(reader, topics)
    conversation_log = app.topic(
        topics.conversations.name,
        partitions=topics.conversations.partitions,
        internal=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    deadline: StopDeadline = app.add_context(StopDeadline(settings.kafka.wedged_stop_s))

    async def crash(reason: BaseException) -> None:
        """Crash the app, for its worker to stop and the supervisor to restart it, with a deadline
        on that stop: a crashed worker that cannot stop ends anyway (`StopDeadline`)."""
        deadline.arm()
        await app.crash(reason)

    outputs = Outputs(topics.dead_letters, topics.conversations, topics.tokens)
    agent = consume_with(Processor(admission, producer, outputs), crash)
    app.agent(conversation_log, name=admission.name, isolated_partitions=True)(agent)

    check = GroupCheck(app_id)
    watchdog = GroupWatchdog(app_id, settings.kafka.membership_grace_s, settings.kafka.stall_grace_s)

    @app.timer(CHECK_EVERY_S)
    async def check_standing() -> None:
        """Crash a worker wedged out of its group, or in it not reading (see `infra.membership`)."""
        if why := watchdog.wedged(await asyncio.to_thread(check)):
            await crash(RuntimeError(f"{why}: restarting"))

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's handler type fits no coroutine function
    async def close_clients(sender: faust.App, **_: Any) -> None:
        """After the consumer stopped: deliver what is queued, then let the stores go."""
        await asyncio.to_thread(producer.close)
        await signals.aclose()
        await redis.aclose()
        cluster.shutdown()

    return app


def _faust_app(app_id: str, offset_reset: str) -> faust.App:
    """The Faust app, its settings steno's.

    `offset_reset` applies only to a group with no committed offsets: "earliest", so a message
    sent before the group first committed (its processors starting as the API already takes
    messages) is answered, not skipped. The broker keeps a group's offsets for a year after its
    last member left (`infra.kafka`), so a long outage does not send the group back to the start.

    Session timeout and heartbeats as for every steno consumer (`infra.kafka_clients.consumer`):
    a processor that died or froze loses its partitions within ~7 s, not Faust's default 60 s.
    Its transport's consumer resumes a partition at the group's committed offset even where
    aiokafka misreads a busy coordinator's answer as "none" (`stream_processors.committed_offsets`).
    """
    app = faust.App(
        app_id,
        broker=f"kafka://{settings.kafka.bootstrap}",
        broker_client_id=client_id(app_id),
        broker_session_timeout=settings.kafka.consumer_session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka.consumer_heartbeat_ms / 1000,
        store="memory://",
        datadir=str(settings.stack.data_dir / "faust"),
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset=offset_reset,
        stream_wait_empty=False,  # stop without draining: unacked records are redelivered (rule 2)
    )
    app.transport = CommittedOffsetsTransport(app.conf.broker_consumer, app)  # `stream_processors.committed_offsets`
    return app


def _admission(reader: ConversationReader, topics: Topics) -> AdmissionStep:
    context = settings.context
    assembler = ContextAssembler(reader, context.system_prompt, settings.models, context.anchored_window)
    return AdmissionStep(
        Moderator(settings.moderation), assembler, topics.conversations, topics.tokens, topics.inference_requests
    )


def _context_readers(
    cluster: Cluster, redis: Redis, cache_namespace: str | None
) -> tuple[ActiveContext | LiveContext, History | LiveHistory]:
    if cache_namespace is None:
        generations = Generations(cluster, redis, settings.context, settings.cassandra.keyspace)
        return LiveContext(generations), LiveHistory(generations)
    context = ActiveContext(redis, settings.context, namespace=cache_namespace)
    return context, History(cluster.connect(settings.cassandra.keyspace))


def consume_with(
    processor: Processor, crash: Callable[[BaseException], Awaitable[None]]
) -> Callable[[faust.StreamT[bytes]], Awaitable[None]]:
    """An agent that hands each record to the processor and acks it once its effects are in Kafka
    (`stream_processors.delivery_window`); a failed delivery `crash`es the app, to be restarted."""

    async def agent(stream: faust.StreamT[bytes]) -> None:
        window = DeliveryWindow(UNSETTLED_RECORDS, crash)
        manual_acks = cast(faust.Stream[bytes], stream).noack()  # what Faust passes; StreamT lacks noack()
        async for event in manual_acks.events():
            message = event.message
            delivered = await processor.process(
                Record(message.topic, message.partition, message.offset, message.key, message.value)
            )
            await window.ack_after(delivered, event.ack)

    agent.__qualname__ = processor.name  # Faust labels an agent's log lines with its function's name
    return agent
