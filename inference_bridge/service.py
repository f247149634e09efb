"""The inference bridge: inference requests in, Triton streams out, token events back to Kafka.

One instance serves up to `max_concurrent` generations at once as asyncio tasks, and stops
fetching (pauses its partitions) while it is full, so a burst waits in Kafka rather than in
memory. Instances scale out as one consumer group over the request topic's partitions; every
instance also reads the whole control topic, because any of them may hold a cancelled stream.

Kafka's consumers block, so each runs in its own thread; everything else (the generations,
the offset bookkeeping, commits) happens on the event loop. The only crossing the other way is
a partition revocation, which librdkafka reports from inside `consume`: the callback waits for
the loop to abandon that partition's generations and name the offsets it may still commit.

Rebalances are cooperative (incremental): a bridge joining or leaving moves only the partitions
that change owner, and the generations of every other partition run on undisturbed. A partition
that moves has its generations abandoned, and their sent events acknowledged, before it is let
go, so the new owner's attempt (numbered after it) is the only one writing. A partition lost
without a revocation (this bridge was frozen past its session timeout) is caught by the attempt
fence in `Generation`. A request redelivered while its first copy still runs here (a processor
that crashed after writing it) waits for that copy to end, then finds the response finished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, AsyncExitStack, aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from inference_bridge import attempts
from inference_bridge.attempts import Attempts
from inference_bridge.cancels import PendingCancels
from inference_bridge.control import cancelled_response, control_consumer
from inference_bridge.final_events import FinalEvents
from inference_bridge.generation import Generation
from inference_bridge.offsets import OffsetTracker
from inference_bridge.router import LeastBusyRouter, chat_key
from inference_bridge.sampling import sampling_parameters
from inference_bridge.topics import Topics
from inference_bridge.triton_stream import Endpoint, InferenceError, ModelStalled, Timeouts, stream_text
from infra import wedged
from infra.kafka_clients import (
    COOPERATIVE,
    DELIVERY_TIMEOUT_S,
    EventProducer,
    Record,
    consumer,
    dead_letter,
    next_batch,
)
from infra.settings import BridgeSettings
from infra.windowed_producer import WindowedProducer
from schemas.events import InferenceRequested
from schemas.serde import UndecodableEvent, decode

log = logging.getLogger(__name__)

GROUP_ID = "steno-bridge"
PROCESSOR = "inference_bridge"
POLL_S = 0.1  # how long a consumer thread blocks per call: bounds shutdown and commit latency
COMMIT_EVERY_S = 1.0  # under load, commit at most this often (see `_commit`)
CANCEL_MEMORY_S = 600.0  # how long an early cancel waits for its request; also the control lookback
CANCEL_MEMORY_SIZE = 100_000
ABANDON_S = DELIVERY_TIMEOUT_S + 15.0  # how long abandoned or ending generations get to end (see `_abandon`)
FLUSH_S = 5.0  # how long an abandoned generation's sent events get to be acknowledged before it lets go
RELEASE_S = ABANDON_S + FLUSH_S + 30.0  # how long a rebalance callback may take in all (see `_letting_go`)
PROBE_S = 1.0  # one readiness probe of a Triton endpoint, while waiting for one to come back
PROBE_EVERY_S = 0.5

T = TypeVar("T")


@dataclass(frozen=True)
class _InFlight:
    partition: int
    offset: int
    generation: Generation | None  # None while a dead letter is being written


class Bridge:
    """Runs until `stop` is set, then drains, commits and leaves the consumer group."""

    # connections, made by `run`
    _loop: asyncio.AbstractEventLoop
    _router: LeastBusyRouter[Endpoint]
    _attempts: Attempts
    _finals: FinalEvents
    _producer: EventProducer
    _batching_producer: EventProducer | WindowedProducer  # a reply's tokens after its first (`Generation`)
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
        self._committed_at = 0.0  # loop time of the last commit
        self._pending_cancels = PendingCancels(CANCEL_MEMORY_S, CANCEL_MEMORY_SIZE)
        self._in_flight: dict[asyncio.Task[None], _InFlight] = {}
        self._by_response: dict[str, asyncio.Task[None]] = {}  # the newest task per response id
        # What abandoned generations sent that Kafka had not settled when they let go (it was down),
        # per response id: a later attempt at the response here waits for it (`_run_once_at_a_time`).
        self._unsettled: dict[str, list[asyncio.Future[Any]]] = {}
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
        endpoints = {url: Endpoint(url) for url in self._endpoints}
        for endpoint in endpoints.values():
            resources.push_async_callback(endpoint.close)
        self._router = LeastBusyRouter(endpoints, affinity_slack=self._config.affinity_slack)
        redis_client = attempts.connect(self._redis_url)
        resources.push_async_callback(redis_client.aclose)
        self._attempts = Attempts(redis_client)
        self._finals = FinalEvents(self._topics)
        self._producer = self._open_producer(resources, self._config.producer_linger_ms)
        self._batching_producer = (
            await self._open_windowed_producer(resources)
            if self._config.token_linger_ms != self._config.producer_linger_ms
            else self._producer
        )
        self._requests_thread = resources.enter_context(ThreadPoolExecutor(1, "bridge-requests"))
        self._control_thread = resources.enter_context(ThreadPoolExecutor(1, "bridge-control"))
        self._requests = consumer(self._group_id, **COOPERATIVE)
        resources.push_async_callback(self._in_thread, self._requests_thread, self._requests.close)
        self._requests.subscribe(
            [self._topics.inference_requests.name],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        control = self._topics.control
        self._control = await self._in_thread(self._control_thread, control_consumer, control, CANCEL_MEMORY_S)
        resources.push_async_callback(self._in_thread, self._control_thread, self._control.close)

    def _open_producer(self, resources: AsyncExitStack, linger_ms: float) -> EventProducer:
        producer = EventProducer(
            **{"linger.ms": linger_ms, "max.in.flight.requests.per.connection": self._config.producer_max_in_flight}
        )
        resources.push_async_callback(asyncio.to_thread, producer.close)
        return producer

    async def _open_windowed_producer(self, resources: AsyncExitStack) -> WindowedProducer:
        producer = WindowedProducer(self._config.token_linger_ms, client_id=f"{self._group_id}-tokens")
        await producer.start()
        resources.push_async_callback(producer.stop)
        return producer

    async def _drain(self) -> None:
        """Let running generations finish (for up to `drain_s`), commit them, hand the rest over.

        The consumer keeps polling meanwhile, fetching nothing new (paused) but serving
        rebalances, so a partition another bridge asks for moves at once. Leaving the group
        (closing the consumer, with its final commit) follows in `run`'s exit stack; the requests
        abandoned here stay uncommitted and their new owner retries them as attempt + 1.
        """
        if self._in_flight:
            log.info("draining %d generation(s)", len(self._in_flight))
        deadline = self._loop.time() + self._config.drain_s
        while self._in_flight and self._loop.time() < deadline and self._error is None:
            self._requests.pause(self._requests.assignment())  # every round: a rebalance assigns unpaused
            await self._poll(1)  # what it returns was fetched after the stop: left to the next owner
            self._commit()
        await self._abandon(set(self._in_flight))

    async def _in_thread(self, thread: ThreadPoolExecutor, call: Callable[..., T], *args: Any) -> T:
        return await self._loop.run_in_executor(thread, call, *args)

    # --- inference requests ---------------------------------------------------------------

    async def _consume_requests(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and self._error is None:
            free = self._config.max_concurrent - len(self._in_flight)
            self._throttle(free)
            messages = await self._poll(max(free, 1))
            for message in messages:
                self._accept(message)
            self._commit(unless_recent=bool(messages))

    async def _poll(self, most: int) -> list[Message]:
        return await self._in_thread(self._requests_thread, next_batch, self._requests, POLL_S, most)

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
            log=self._producer,
            batching_log=self._batching_producer,
            attempts=self._attempts,
            max_attempts=self._config.max_attempts,
            topics=self._topics,
            recover=self._recover,
            retry_budget_s=self._config.retry_budget_s,
            finals=self._finals,
        )
        if self._pending_cancels.take(request.response_id):
            generation.cancel()
        self._run_once_at_a_time(generation, _InFlight(partition, offset, generation))

    def _run_once_at_a_time(self, generation: Generation, in_flight: _InFlight) -> None:
        """Run the generation, after the one already running here for the same response if any
        (that one's end marks the response finished, so the copy then writes nothing), and after
        every event an abandoned one here sent is settled in Kafka: a generation's events go through
        two producers, which keep no order between them, so a new attempt's first events could
        otherwise land before an abandoned attempt's last tokens (Kafka down when it let go)."""
        response_id = generation.request.response_id
        running = self._by_response.get(response_id)
        unsettled = [ack for ack in self._unsettled.get(response_id, []) if not ack.done()]
        earlier = [*unsettled, *([running] if running is not None else [])]
        if earlier:
            log.info("response %s waits for %d earlier event(s) or generation(s) here", response_id, len(earlier))
        work = generation.run()
        task = self._track(_after(earlier, work, response_id, self._stopping) if earlier else work, in_flight)
        self._by_response[response_id] = task
        task.add_done_callback(lambda done: self._forget_response(response_id, done))

    def _forget_response(self, response_id: str, task: asyncio.Task[None]) -> None:
        """Forget the response's task, and what abandoned ones sent once it is all settled: a task
        abandoned while it waited for that leaves it to its own retry to wait for."""
        if self._by_response.get(response_id) is task:
            del self._by_response[response_id]
        acks = self._unsettled.get(response_id)  # None but after an abandonment: no work per request
        if acks is not None and all(ack.done() for ack in acks):
            del self._unsettled[response_id]

    def _track(self, work: Coroutine[Any, Any, None], in_flight: _InFlight) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._in_flight[task] = in_flight
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        in_flight = self._in_flight.pop(task)
        if not task.cancelled() and task.exception() is None:  # a cancelled task was abandoned
            self._offsets.finish(in_flight.partition, in_flight.offset)
        self._check_crash(task)

    def _stopping(self) -> bool:
        """An unexpected error was seen: the bridge is on its way out (see `_check_crash`)."""
        return self._error is not None

    def _check_crash(self, task: asyncio.Task[None]) -> None:
        """An unexpected error (Kafka refusing events, Redis down) stops the bridge, uncommitted:
        a restarted bridge retries the request, which is safer than guessing at its state."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("unexpected error; stopping the bridge", exc_info=task.exception())
        self._error = self._error or task.exception()

    def _commit(self, *, unless_recent: bool = False) -> None:
        """Commit, asynchronously, the positions that moved (consumer close waits for the commit);
        `unless_recent`: not if the last commit was under COMMIT_EVERY_S ago.

        Each commit is a Kafka request, and under load a generation ends every few milliseconds.
        Committing later only means more redelivery after a crash, and a redelivered request whose
        response ended is a no-op (`Attempts.begin` finds it finished), so the commits are sparse
        while requests keep coming, and prompt once they stop, on drain and on revocation.
        """
        now = self._loop.time()
        if unless_recent and now - self._committed_at < COMMIT_EVERY_S:
            return
        positions = self._offsets.committable()
        if positions:
            self._requests.commit(offsets=self._topic_partitions(positions), asynchronous=True)
            self._committed_at = now

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
        """The reply from the endpoint the router picks (the chat's own, or the least busy); an
        endpoint whose server went away is marked down.

        A stalled stream is the model's when its server still answers a readiness probe: the
        same request would most likely stall again, so the reply fails. A server that answers
        nothing has hung (a frozen VM, a deadlock, a cut network) and is treated as gone: the
        reply starts over once a server answers, as after a crash; a liveness probe would have
        restarted a hung pod."""
        sampling = sampling_parameters(request, self._sampling.get(request.model, {}))
        with self._router.lease(chat_key(request.prompt)) as client:
            chunks = stream_text(client, request.model, request.prompt, sampling, self._timeouts)
            try:
                async with aclosing(chunks):
                    async for chunk in chunks:
                        yield chunk
            except ModelStalled as stall:
                if await client.serves(request.model, PROBE_S):
                    raise
                self._router.mark(client, down=True)
                raise InferenceError(f"{stall}, and its server answers nothing", retryable=True) from stall
            except InferenceError as exc:
                if exc.retryable:
                    self._router.mark(client, down=True)
                raise

    async def _recover(self, request: InferenceRequested, deadline: float) -> None:
        """Wait until an endpoint serves the request's model, probing the ones not down first, so
        that the retry goes to another server when the fleet has one, else to this one once back."""
        while True:
            for client in self._router.clients():
                ready = await client.serves(request.model, PROBE_S)
                self._router.mark(client, down=not ready)
                if ready:
                    return
            if self._loop.time() >= deadline:
                raise InferenceError(
                    f"inference server unavailable: no endpoint served {request.model!r} again within"
                    f" {self._config.retry_budget_s:g}s (STENO_BRIDGE__RETRY_BUDGET_S)"
                )
            await asyncio.sleep(PROBE_EVERY_S)

    # --- rebalances -------------------------------------------------------------------------

    # Called in the consumer thread, from inside `poll` (or `close`). Cooperative rebalancing: each
    # callback gets only the partitions that change, and adds or removes just those.

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned partitions %s", sorted(tp.partition for tp in partitions))
        consumer.incremental_assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Abandon what is unfinished, commit what is done, let go (see `_letting_go`)."""
        with self._letting_go(partitions, "revoked"):
            positions = self._run_on_loop(self._release({tp.partition for tp in partitions}))
            if positions:
                try:
                    consumer.commit(offsets=self._topic_partitions(positions), asynchronous=False)
                except KafkaException as exc:  # the next owner redoes the finished requests: at least once
                    log.warning("commit on revoke failed: %s", exc)
            consumer.incremental_unassign(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group gave the partitions to others already (this bridge missed its session
        timeout): stop their generations at once; committing is no longer possible."""
        log.warning("lost partitions %s", sorted(tp.partition for tp in partitions))
        with self._letting_go(partitions, "lost"):
            self._run_on_loop(self._release({tp.partition for tp in partitions}))
            consumer.incremental_unassign(partitions)

    @staticmethod
    def _letting_go(partitions: list[TopicPartition], how: str) -> AbstractContextManager[None]:
        """The bound on a rebalance callback, which librdkafka waits for and which waits in turn
        on the event loop (`_release`, itself bounded there by ABANDON_S) and on librdkafka's own
        synchronous calls, which take no timeout (the commit). A callback that does not return
        keeps the bridge out of its group for good, alive and serving nothing, as one did after a
        broker died (cause not found): past RELEASE_S the bridge exits, every thread's stack in
        its log, and its supervisor restarts it."""
        return wedged.deadline(RELEASE_S, f"letting go of {how} partitions {sorted(tp.partition for tp in partitions)}")

    def _run_on_loop(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    async def _release(self, partitions: set[int]) -> dict[int, int]:
        """Abandon the partitions' generations; return every commit position not yet committed."""
        await self._abandon({task for task, f in self._in_flight.items() if f.partition in partitions})
        positions = self._offsets.committable()
        for partition in partitions:
            self._offsets.forget(partition)
        return positions

    async def _abandon(self, tasks: set[asyncio.Task[None]]) -> None:
        """Stop the generations, then wait (bounded) until what they sent is in the log, so that
        none of it lands after the next owner's attempt began. A generation already writing its
        final event is let finish instead (bounded by the producer's delivery timeout): its end
        is then in the log and the response marked finished, so the retry writes nothing.

        This runs inside a rebalance callback (see `_letting_go`), so a generation that does not
        end must not hold it: past ABANDON_S the bridge exits, as `kill -9` would end it, and its
        supervisor restarts it; the stuck tasks' stacks go to the log."""
        if not tasks:
            return
        generations = [self._in_flight[task].generation for task in tasks]
        abandoned = {task for task in tasks if not _ending(self._in_flight[task].generation)}
        for task in abandoned:
            task.cancel()
        log.info("abandoned %d generation(s); their requests will be retried", len(abandoned))
        await wedged.ended_or_exit(tasks, ABANDON_S, "abandoned or ending generation(s)")
        sent: dict[str, list[asyncio.Future[Any]]] = {}
        for generation in filter(None, generations):
            acks = sent.setdefault(generation.request.response_id, [])
            acks += [_settling(ack) for ack in generation.unacknowledged()]
        if any(sent.values()):
            await asyncio.wait([ack for acks in sent.values() for ack in acks], timeout=FLUSH_S)
        self._keep_unsettled(sent)

    def _keep_unsettled(self, sent: dict[str, list[asyncio.Future[Any]]]) -> None:
        """Remember, per response, what abandoned generations sent and Kafka has not settled yet;
        forget what it has settled since."""
        for response_id, acks in sent.items():
            self._unsettled.setdefault(response_id, []).extend(acks)
        self._unsettled = {r: acks for r, acks in self._unsettled.items() if not all(a.done() for a in acks)}
        if self._unsettled:
            waiting = {
                response_id: sum(not ack.done() for ack in acks) for response_id, acks in self._unsettled.items()
            }
            log.info("events of abandoned generations not acknowledged yet, by response: %s", waiting)

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


def _settling(ack: Awaitable[Any]) -> asyncio.Future[Any]:
    """An abandoned generation's acknowledgement, as a future whose failure is looked at: the
    reply's retry writes it anew, and `_keep_unsettled` says how many were still unsettled, so a
    failed one needs no more; left unretrieved, each would log "Task exception was never retrieved"."""
    future = asyncio.ensure_future(ack)
    future.add_done_callback(lambda settled: settled.cancelled() or settled.exception())
    return future


def _ending(generation: Generation | None) -> bool:
    return generation is not None and generation.ending


async def _after(
    earlier: Collection[asyncio.Future[Any]],
    work: Coroutine[Any, Any, None],
    response_id: str,
    stopping: Callable[[], bool],
) -> None:
    """Run `work` once everything in `earlier` has ended, however it ended, unless the bridge is
    stopping by then. Both ends of the wait are logged: it comes only after an abandonment or a
    duplicate delivery, and a wait that never ends must show in the log.

    An earlier generation that ends on an unexpected error stops the bridge (a window of tokens
    Kafka did not acknowledge, after a frozen broker), and its copy waiting here (the processors
    wrote the request twice) would otherwise begin at once: it would number an attempt, one of
    the reply's `max_attempts`, that the drain abandons a moment later. That gave up a reply in
    the chaos suite (its four deliveries: the freeze, the twin, the copy, the restart). The work
    is left instead, uncommitted, to the next owner, as an abandoned generation is."""
    began = time.monotonic()
    try:
        await asyncio.wait(earlier)
    except asyncio.CancelledError:
        work.close()
        raise
    if stopping():
        work.close()
        log.info("response %s not begun, after %.1f s waiting: the bridge is stopping", response_id, _since(began))
        raise asyncio.CancelledError  # the task ends as an abandoned one: not committed, retried by the next owner
    log.info("response %s runs, after %.1f s waiting", response_id, _since(began))
    await work


def _since(began: float) -> float:
    return time.monotonic() - began


def _inference_request(raw: bytes | None) -> InferenceRequested:
    event = decode(raw)
    if not isinstance(event, InferenceRequested):
        raise UndecodableEvent(f"a {event.type} event is not an inference request")
    return event
