"""The inference bridge: inference requests in, Triton streams out, token events back to Kafka.

One instance serves up to `max_concurrent` generations at once as asyncio tasks, and stops
fetching (pauses its partitions) while it is full, so a burst waits in Kafka rather than in
memory. Instances scale out as one consumer group over the request topic's partitions; every
instance also reads the whole control topic, because any of them may hold a cancelled stream.

Kafka's consumers block, so each runs in its own thread; everything else (the generations,
the offset bookkeeping, commits) happens on the event loop. The only crossing the other way is
a partition revocation, which librdkafka reports from inside `consume`: the callback waits for
the loop to abandon that partition's generations and name the offsets it may still commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as redis
import tritonclient.grpc.aio as triton
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE

from inference_bridge.attempts import Attempts
from inference_bridge.cancels import PendingCancels
from inference_bridge.control import cancelled_response, control_consumer
from inference_bridge.generation import Generation
from inference_bridge.offsets import OffsetTracker
from inference_bridge.router import LeastBusyRouter
from inference_bridge.topics import Topics
from inference_bridge.triton_stream import Timeouts, stream_text
from infra.kafka_clients import EventProducer, Record, consumer, dead_letter, next_batch
from infra.settings import BridgeSettings
from schemas.events import InferenceRequested
from schemas.serde import UndecodableEvent, decode

log = logging.getLogger(__name__)

GROUP_ID = "steno-bridge"
PROCESSOR = "inference_bridge"
POLL_S = 0.1  # how long a consumer thread blocks per call: bounds shutdown and commit latency
CANCEL_MEMORY_S = 600.0  # how long an early cancel waits for its request; also the control lookback
CANCEL_MEMORY_SIZE = 100_000
DRAIN_S = 20.0  # on SIGTERM, time given to running generations before they are abandoned

T = TypeVar("T")

# tritonclient's channel options, plus reconnects: gRPC backs off up to 2 minutes between
# reconnects to a lost server, failing requests at once meanwhile; a Triton that restarts in
# seconds should get traffic again within a second.
RECONNECT = [
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass(frozen=True)
class _InFlight:
    partition: int
    offset: int
    generation: Generation | None  # None while a dead letter is being written


class Bridge:
    """Runs until `stop` is set, then drains, commits and leaves the consumer group."""

    # connections, made by `run`
    _loop: asyncio.AbstractEventLoop
    _router: LeastBusyRouter[triton.InferenceServerClient]
    _attempts: Attempts
    _producer: EventProducer
    _requests: Consumer
    _control: Consumer
    _requests_thread: ThreadPoolExecutor
    _control_thread: ThreadPoolExecutor

    def __init__(
        self,
        config: BridgeSettings,
        endpoints: Sequence[str],
        *,
        redis_url: str,
        group_id: str = GROUP_ID,
        sampling: Mapping[str, Mapping[str, Any]] | None = None,
        topics: Topics = Topics(),
    ) -> None:
        """`sampling`: extra sampling parameters per model name, sent with every request for it."""
        self._config = config
        self._topics = topics
        self._endpoints = list(endpoints)
        self._redis_url = redis_url
        self._group_id = group_id
        self._sampling = {model: dict(params) for model, params in (sampling or {}).items()}
        self._timeouts = Timeouts(config.first_token_timeout_s, config.token_timeout_s)
        self._offsets = OffsetTracker()
        self._pending_cancels = PendingCancels(CANCEL_MEMORY_S, CANCEL_MEMORY_SIZE)
        self._in_flight: dict[asyncio.Task[None], _InFlight] = {}
        self._paused = False
        self._error: BaseException | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set; raises if an unexpected error stopped the bridge first."""
        self._loop = asyncio.get_running_loop()
        async with AsyncExitStack() as resources:
            await self._open(resources)
            cancels = asyncio.create_task(self._consume_cancels())
            cancels.add_done_callback(self._check_crash)
            try:
                await self._consume_requests(stop)
                await self._drain()
            finally:
                cancels.cancel()
                await asyncio.gather(cancels, return_exceptions=True)
        if self._error is not None:
            raise RuntimeError("the bridge stopped on an unexpected error") from self._error

    # --- set-up and tear-down -----------------------------------------------------------

    async def _open(self, resources: AsyncExitStack) -> None:
        """Connect to everything; the exit stack closes it all in reverse order."""
        clients = {url: triton.InferenceServerClient(url, channel_args=RECONNECT) for url in self._endpoints}
        for client in clients.values():
            resources.push_async_callback(client.close)
        self._router = LeastBusyRouter(clients)
        redis_client = redis.Redis.from_url(self._redis_url)
        resources.push_async_callback(redis_client.aclose)
        self._attempts = Attempts(redis_client)
        self._producer = EventProducer()
        resources.push_async_callback(asyncio.to_thread, self._producer.close)
        self._requests_thread = resources.enter_context(ThreadPoolExecutor(1, "bridge-requests"))
        self._control_thread = resources.enter_context(ThreadPoolExecutor(1, "bridge-control"))
        self._requests = consumer(self._group_id)
        resources.push_async_callback(self._in_thread, self._requests_thread, self._requests.close)
        self._requests.subscribe([self._topics.inference_requests.name], on_revoke=self._on_revoke)
        control = self._topics.control
        self._control = await self._in_thread(self._control_thread, control_consumer, control, CANCEL_MEMORY_S)
        resources.push_async_callback(self._in_thread, self._control_thread, self._control.close)

    async def _drain(self) -> None:
        """Let running generations finish (bounded), commit them, abandon the rest."""
        self._requests.pause(self._requests.assignment())
        if self._in_flight:
            log.info("draining %d generation(s)", len(self._in_flight))
            await asyncio.wait(self._in_flight, timeout=DRAIN_S)
        self._commit()
        await self._abandon(set(self._in_flight))

    async def _in_thread(self, thread: ThreadPoolExecutor, call: Callable[..., T], *args: Any) -> T:
        return await self._loop.run_in_executor(thread, call, *args)

    # --- inference requests ---------------------------------------------------------------

    async def _consume_requests(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and self._error is None:
            free = self._config.max_concurrent - len(self._in_flight)
            self._throttle(free)
            messages = await self._in_thread(self._requests_thread, next_batch, self._requests, POLL_S, max(free, 1))
            for message in messages:
                self._accept(message)
            self._commit()

    def _throttle(self, free: int) -> None:
        """Stop fetching while full, start again once a generation ends."""
        if free <= 0:
            self._requests.pause(self._requests.assignment())  # every round: a rebalance assigns unpaused
            self._paused = True
        elif self._paused:
            self._requests.resume(self._requests.assignment())
            self._paused = False

    def _accept(self, message: Message) -> None:
        if message.error():
            log.warning("inference requests: %s", message.error())
            return
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None  # set on every fetched message
        self._offsets.start(partition, offset)
        try:
            request = _inference_request(message.value())
        except UndecodableEvent as exc:
            self._track(self._dead_letter(message, str(exc)), _InFlight(partition, offset, None))
            return
        generation = Generation(
            request,
            stream=self._text_stream,
            send=self._producer.send,
            attempts=self._attempts,
            max_attempts=self._config.max_attempts,
            topics=self._topics,
        )
        if self._pending_cancels.take(request.response_id):
            generation.cancel()
        self._track(generation.run(), _InFlight(partition, offset, generation))

    def _track(self, work: Coroutine[Any, Any, None], in_flight: _InFlight) -> None:
        task = asyncio.create_task(work)
        self._in_flight[task] = in_flight
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        in_flight = self._in_flight.pop(task)
        if not task.cancelled() and task.exception() is None:  # a cancelled task was abandoned
            self._offsets.finish(in_flight.partition, in_flight.offset)
        self._check_crash(task)

    def _check_crash(self, task: asyncio.Task[None]) -> None:
        """An unexpected error (Kafka refusing events, Redis down) stops the bridge, uncommitted:
        a restarted bridge retries the request, which is safer than guessing at its state."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("unexpected error; stopping the bridge", exc_info=task.exception())
        self._error = self._error or task.exception()

    def _commit(self) -> None:
        positions = self._offsets.committable()
        if positions:
            self._requests.commit(offsets=self._topic_partitions(positions), asynchronous=True)

    def _topic_partitions(self, positions: dict[int, int]) -> list[TopicPartition]:
        topic = self._topics.inference_requests.name
        return [TopicPartition(topic, partition, offset) for partition, offset in positions.items()]

    async def _dead_letter(self, message: Message, reason: str) -> None:
        log.warning("dead-lettering %s[%d]@%d: %s", message.topic(), message.partition(), message.offset(), reason)
        key = (message.key() or b"").decode(errors="replace")
        await self._producer.send(
            self._topics.dead_letters, dead_letter(Record.of(message), PROCESSOR, reason), key=key
        )

    async def _text_stream(self, request: InferenceRequested) -> AsyncGenerator[str, None]:
        sampling = {**self._sampling.get(request.model, {}), "max_tokens": request.max_tokens}
        with self._router.lease() as client:
            chunks = stream_text(client, request.model, request.prompt, sampling, self._timeouts)
            async with aclosing(chunks):
                async for chunk in chunks:
                    yield chunk

    # --- rebalances -------------------------------------------------------------------------

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Called in the consumer thread: abandon what is unfinished, commit what is done, let go."""
        lost = {tp.partition for tp in partitions}
        positions = asyncio.run_coroutine_threadsafe(self._release(lost), self._loop).result()
        if not positions:
            return
        try:
            consumer.commit(offsets=self._topic_partitions(positions), asynchronous=False)
        except KafkaException as exc:  # the next owner redoes the finished requests: at least once
            log.warning("commit on revoke failed: %s", exc)

    async def _release(self, partitions: set[int]) -> dict[int, int]:
        """Abandon the partitions' generations; return every commit position not yet committed."""
        await self._abandon({task for task, f in self._in_flight.items() if f.partition in partitions})
        positions = self._offsets.committable()
        for partition in partitions:
            self._offsets.forget(partition)
        return positions

    async def _abandon(self, tasks: set[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        if tasks:
            log.info("abandoned %d generation(s); their requests will be retried", len(tasks))
            await asyncio.wait(tasks)

    # --- cancels ----------------------------------------------------------------------------

    async def _consume_cancels(self) -> None:
        while True:
            messages = await self._in_thread(self._control_thread, next_batch, self._control, POLL_S)
            for message in messages:
                response_id = cancelled_response(message)
                if response_id is not None:
                    self._cancel(response_id)

    def _cancel(self, response_id: str) -> None:
        """Stop the response's generation if it runs here, else remember the cancel for later."""
        running = [
            f.generation
            for f in self._in_flight.values()
            if f.generation is not None and f.generation.request.response_id == response_id
        ]
        for generation in running:
            generation.cancel()
        if not running:
            self._pending_cancels.add(response_id)


def _inference_request(raw: bytes | None) -> InferenceRequested:
    event = decode(raw)
    if not isinstance(event, InferenceRequested):
        raise UndecodableEvent(f"a {event.type} event is not an inference request")
    return event
