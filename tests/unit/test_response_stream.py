"""Stitching remembered and live events for one SSE client: no gap, no duplicate (rule 5)."""

import asyncio
import gc
import json
from collections.abc import AsyncIterator

from confluent_kafka import KafkaError, KafkaException
from sse_starlette import ServerSentEvent

from infra.partition_reads import PartitionReadIncomplete
from infra.wedged import EXIT_WEDGED
from ingest_api import response_stream, responses, token_feed
from ingest_api.positions import LoggedEvent, logged
from ingest_api.response_stream import response_batches, response_events
from ingest_api.responses import to_sse
from ingest_api.token_feed import Subscription, TokenFeed
from schemas.events import ResponseEnded, ResponseRestarted, ResponseStarted, TokenGenerated, new_id
from schemas.serde import encode
from tests.unit.recorded_exits import recorded_exits

CONVERSATION = new_id()
QUEUE = 1024  # events buffered per subscriber


def token(response_id: str, offset: int, seq: int) -> LoggedEvent:
    return LoggedEvent(
        offset,
        TokenGenerated(conversation_id=CONVERSATION, user_id="u", response_id=response_id, seq=seq, text=f"t{seq} "),
    )


def started(response_id: str, offset: int, attempt: int = 1) -> LoggedEvent:
    return LoggedEvent(
        offset, ResponseStarted(conversation_id=CONVERSATION, user_id="u", response_id=response_id, attempt=attempt)
    )


def ended(response_id: str, offset: int) -> LoggedEvent:
    return LoggedEvent(
        offset, ResponseEnded(conversation_id=CONVERSATION, user_id="u", response_id=response_id, outcome="completed")
    )


def attached_feed(subscriber_queue: int = QUEUE) -> TokenFeed:
    """A feed as it is once its consumer has fixed where it tails from; the tests hand it events."""
    feed = TokenFeed(subscriber_queue)
    feed._ready.set()
    return feed


async def collect(feed: TokenFeed, response_id: str, after: int | None) -> list[int]:
    return [item.offset async for item in response_events(feed, CONVERSATION, response_id, after)]


async def test_events_before_and_after_subscribing_arrive_once_in_order() -> None:
    feed = attached_feed()
    rid = new_id()
    feed._dispatch(
        [
            LoggedEvent(10, ResponseStarted(conversation_id=CONVERSATION, user_id="u", response_id=rid)),
            token(rid, 11, 0),
        ]
    )
    reader = asyncio.create_task(collect(feed, rid, None))
    await asyncio.sleep(0)  # let the reader subscribe
    feed._dispatch([token(rid, 11, 0), token(rid, 12, 1), ended(rid, 14)])  # 11 again: a redelivery
    assert await asyncio.wait_for(reader, 5) == [10, 11, 12, 14]


async def test_a_stream_opened_while_the_feed_attaches_misses_nothing_written_meanwhile(monkeypatch) -> None:
    """An API just started, its clients reconnecting at once: a stream must not read its backlog
    until the feed has fixed where it tails from, or what the bridge writes between the two
    reads reaches the client by neither (the chaos suite's SIGTERM-api gaps)."""
    feed = TokenFeed(QUEUE)  # its consumer is still reading the partitions' ends
    rid = new_id()
    log = [started(rid, 10), token(rid, 11, 0)]

    async def read_log_now(feed: TokenFeed, conversation_id: str, response_id: str) -> list[LoggedEvent]:
        return list(log)

    monkeypatch.setattr(response_stream, "backlog", read_log_now)
    reader = asyncio.create_task(collect(feed, rid, None))
    await asyncio.sleep(0)  # the client connects: its stream runs as far as it can

    log.extend([token(rid, 12, 1), token(rid, 13, 2)])  # the bridge writes on
    feed._ready.set()  # what the consumer does once it has fixed its offsets: past 13
    log.append(ended(rid, 14))
    feed._dispatch([ended(rid, 14)])

    assert await asyncio.wait_for(reader, 5) == [10, 11, 12, 13, 14]


async def test_resume_after_last_event_id_skips_what_the_client_has() -> None:
    feed = attached_feed()
    rid = new_id()
    feed._dispatch([started(rid, 19), token(rid, 20, 0), token(rid, 21, 1), token(rid, 22, 2), ended(rid, 23)])
    assert await collect(feed, rid, 21) == [22, 23]
    assert await asyncio.wait_for(collect(feed, rid, 23), 5) == []  # resumed after the end: closes at once


def restarted(response_id: str, offset: int, attempt: int) -> LoggedEvent:
    return LoggedEvent(
        offset, ResponseRestarted(conversation_id=CONVERSATION, user_id="u", response_id=response_id, attempt=attempt)
    )


def late(item: LoggedEvent, attempt: int) -> LoggedEvent:
    """`item` as an earlier attempt wrote it: read back from its bytes, as the feed reads a token."""
    body = item.event.model_copy(update={"attempt": attempt})
    read = logged(item.offset, encode(body))
    assert read is not None and read.attempt == attempt
    return read


async def test_a_late_write_of_an_attempt_given_up_is_not_passed_on() -> None:
    """A token of attempt 1 stored after attempt 2's restart (sent to a broker that hung, stored
    once it came back; the cluster chaos suite's frozen broker), and its ResponseEnded: neither is
    the reply's, live or read back from the log on a resume."""
    feed = attached_feed()
    rid = new_id()
    feed._dispatch([started(rid, 60), token(rid, 61, 0), restarted(rid, 62, 2), started(rid, 63, attempt=2)])
    reader = asyncio.create_task(collect(feed, rid, None))
    await asyncio.sleep(0)
    feed._dispatch([late(token(rid, 64, 1), attempt=1), late(token(rid, 65, 0), attempt=2)])
    feed._dispatch([late(ended(rid, 66), attempt=1), late(ended(rid, 67), attempt=2)])

    assert await asyncio.wait_for(reader, 5) == [60, 61, 62, 63, 65, 67]
    assert await collect(feed, rid, 63) == [65, 67]


def test_a_feed_that_attached_mid_response_sends_readers_to_the_log() -> None:
    """A restarted API sees only the tail of a reply that was streaming: its memory of that reply
    must not pass for the whole of it, or a resumed client misses what was written meanwhile."""
    feed = attached_feed()
    rid, retried = new_id(), new_id()
    feed._dispatch([token(rid, 30, 5), token(rid, 31, 6), ended(rid, 32)])
    feed._dispatch([started(retried, 40, attempt=2), token(retried, 41, 0)])
    assert feed.remembered(rid) is None
    assert feed.remembered(retried) is None


def test_a_feed_that_saw_the_first_event_remembers_the_whole_response() -> None:
    feed = attached_feed()
    rid = new_id()
    feed._dispatch([started(rid, 50), token(rid, 51, 0)])
    assert [item.offset for item in feed.remembered(rid) or []] == [50, 51]


def test_before_the_feed_attached_no_response_counts_as_new() -> None:
    """Until its start offsets are fixed, the feed cannot vouch for any response: read the log."""
    assert TokenFeed(QUEUE).remembered(new_id()) is None


def test_a_full_queue_overflows_instead_of_growing() -> None:
    rid = new_id()
    subscription = Subscription(rid, capacity=2)
    for offset in range(5):
        subscription.offer(token(rid, offset, offset))
    assert subscription.overflowed


async def test_what_arrived_while_the_reader_was_busy_comes_as_one_batch_and_the_end_after_it() -> None:
    rid = new_id()
    subscription = Subscription(rid, capacity=QUEUE)
    batches = subscription.batches()
    for offset in range(3):
        subscription.offer(token(rid, offset, offset))
    assert [item.offset for item in await anext(batches)] == [0, 1, 2]

    async def next_batch() -> list[LoggedEvent]:
        return await anext(batches)

    reader = asyncio.create_task(next_batch())
    await asyncio.sleep(0)  # the reader waits for the next event
    subscription.offer(token(rid, 3, 3))
    subscription.end()
    subscription.offer(token(rid, 4, 4))  # after the end: not passed on
    assert [item.offset for item in await asyncio.wait_for(reader, 5)] == [3]
    assert [batch async for batch in batches] == []


def test_responses_are_forgotten_after_being_quiet_for_a_while_not_after_they_began(monkeypatch) -> None:
    """Memory is freed by how long a response has been quiet: a long reply still streaming stays
    remembered whatever its age, one quiet for REMEMBER_ENDED_S goes (its readers use the log)."""
    clock = [1000.0]
    monkeypatch.setattr("ingest_api.token_feed.time.monotonic", lambda: clock[0])
    feed = attached_feed()
    long_reply, short_reply = new_id(), new_id()
    feed._dispatch([started(long_reply, 1), started(short_reply, 2), ended(short_reply, 3)])
    clock[0] += token_feed.REMEMBER_ENDED_S - 1
    feed._dispatch([token(long_reply, 4, 0)])
    assert feed.remembered(long_reply) is not None and feed.remembered(short_reply) is not None
    clock[0] += 2  # the short reply has been quiet for longer than REMEMBER_ENDED_S now
    feed._dispatch([token(long_reply, 5, 1)])
    assert set(feed._remembered) == {long_reply}


def test_the_feed_knows_which_response_of_a_conversation_ended_last(monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("ingest_api.token_feed.time.monotonic", lambda: clock[0])
    feed = attached_feed()
    first, second = new_id(), new_id()
    feed._dispatch([started(first, 1), ended(first, 2), started(second, 3)])
    assert feed.last_ended(CONVERSATION) == first
    feed._dispatch([ended(second, 4)])
    assert feed.last_ended(CONVERSATION) == second
    clock[0] += token_feed.REMEMBER_ENDED_S + 1
    feed._dispatch([started(new_id(), 5)])  # forgotten with the response: the memory stays bounded
    assert feed.last_ended(CONVERSATION) is None


def test_the_feeds_memory_of_a_token_is_not_walked_by_the_garbage_collector() -> None:
    """Minutes of every reply's tokens are remembered: as objects the GC tracks, its full passes
    walked all of them (a sixth of the API's CPU under load); kept as plain tuples, none."""
    feed = attached_feed()
    rid = new_id()
    read = logged(2, encode(token(rid, 0, 7).event))
    assert read is not None
    feed._dispatch([started(rid, 1), read])
    gc.collect()
    assert not gc.is_tracked(feed._remembered[rid].events[1])
    remembered = feed.remembered(rid) or []
    assert [(item.offset, item.token) for item in remembered] == [(1, None), (2, (7, "t7 "))]
    assert remembered[1].event == read.event


async def test_a_slow_client_overflows_then_catches_up_from_memory() -> None:
    feed = attached_feed(subscriber_queue=2)
    rid = new_id()
    feed._dispatch([started(rid, 0)])
    stream = response_events(feed, CONVERSATION, rid, None)
    first = await anext(stream)  # subscribed now, and not reading while the burst arrives

    feed._dispatch([token(rid, offset, offset) for offset in range(1, 6)] + [ended(rid, 6)])

    assert [first.offset] + [item.offset async for item in stream] == list(range(7))


def test_sse_names_and_ids() -> None:
    rid = new_id()
    sse, done = to_sse(token(rid, 7, 3)), to_sse(ended(rid, 8))
    assert sse is not None and sse.startswith(b"id: 7\r\nevent: token\r\n")
    assert done is not None and done.startswith(b"id: 8\r\nevent: done\r\n")
    assert to_sse(LoggedEvent(1, ResponseStarted(conversation_id=CONVERSATION, user_id="u", response_id=rid))) is None


def test_sse_bytes_are_those_sse_starlette_wrote() -> None:
    """Clients parse the same bytes as before the events were formatted directly: `\\r\\n` line
    ends, json.dumps's spacing and escapes (non-ASCII, quotes, line breaks inside a token)."""
    rid = new_id()
    texts = ["t0 ", "", 'say "hi"\n', "naïve ☕ 😀", "\\ \r\t\u2028", "\x00"]
    events = [
        *(LoggedEvent(100 + n, token(rid, 0, n).event.model_copy(update={"text": t})) for n, t in enumerate(texts)),
        LoggedEvent(200, ResponseRestarted(conversation_id=CONVERSATION, user_id="u", response_id=rid, attempt=2)),
        LoggedEvent(
            201,
            ResponseEnded(
                conversation_id=CONVERSATION,
                user_id="u",
                response_id=rid,
                outcome="failed",
                finish_reason="error",
                detail="Triton: «gone»\nretry",
            ),
        ),
    ]
    for item in events:
        assert to_sse(item) == _sse_starlette(item)


def _sse_starlette(item: LoggedEvent) -> bytes:
    """The encoding the API used before, through sse-starlette's ServerSentEvent."""
    event = item.event
    if isinstance(event, TokenGenerated):
        name, data = "token", {"seq": event.seq, "text": event.text}
    elif isinstance(event, ResponseRestarted):
        name, data = "restart", {"attempt": event.attempt}
    else:
        assert isinstance(event, ResponseEnded)
        name = responses.ENDING_EVENTS[event.outcome]
        data = {"outcome": event.outcome, "finish_reason": event.finish_reason, "detail": event.detail}
    return ServerSentEvent(data=json.dumps(data), event=name, id=str(item.offset)).encode()


async def test_a_conversation_watcher_hears_of_each_response_in_progress_or_new_once() -> None:
    """A reply that began just before the watcher came is announced too: the client read the
    history before it began, or after; one that ended before is in the history either way."""
    feed = attached_feed()
    over, earlier, first, second = new_id(), new_id(), new_id(), new_id()
    feed._dispatch([token(over, 1, 0), ended(over, 2), token(earlier, 3, 0)])
    watcher = feed.watch(CONVERSATION)
    other = feed.watch(new_id())

    feed._dispatch([token(earlier, 4, 1), token(first, 5, 0), token(first, 6, 1), ended(first, 7), token(second, 8, 0)])

    heard = [await asyncio.wait_for(anext(aiter(watcher)), 5) for _ in range(3)]
    assert [(item.event.response_id, item.offset) for item in heard] == [(earlier, 3), (first, 5), (second, 8)]
    assert not watcher._queued
    assert feed._in_progress == {CONVERSATION: {earlier, second}}
    assert not other._queued  # another conversation's watcher
    feed.unwatch(watcher)
    feed.unwatch(other)
    assert feed._watchers == {}


async def test_a_log_that_cannot_be_read_now_is_read_again_not_served_in_part(monkeypatch) -> None:
    """Kafka restarting while a client resumes: a failed or incomplete read is retried, never
    passed on as the whole backlog (the live events after it would leave a gap)."""
    rid = new_id()
    answers: list[Exception | list[LoggedEvent]] = [
        KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN)),
        PartitionReadIncomplete("half"),
        [started(rid, 5)],
    ]

    def read(conversation_id: str, response_id: str) -> list[LoggedEvent]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(response_stream, "read_response", read)
    monkeypatch.setattr(response_stream, "LOG_RETRY_FIRST_S", 0.01)
    assert [item.offset for item in await response_stream.backlog(TokenFeed(QUEUE), CONVERSATION, rid)] == [5]
    assert answers == []


async def test_a_burst_of_live_events_comes_as_one_batch_that_stops_at_the_end() -> None:
    feed = attached_feed()
    rid = new_id()
    feed._dispatch([started(rid, 0)])
    batches = response_batches(feed, CONVERSATION, rid, None)
    assert [i.offset for i in await anext(batches)] == [0]  # the backlog; subscribed now

    feed._dispatch([token(rid, offset, offset) for offset in range(1, 6)] + [ended(rid, 6), token(rid, 7, 7)])

    assert [[i.offset for i in batch] async for batch in batches] == [[1, 2, 3, 4, 5, 6]]


async def test_a_batch_is_written_as_one_chunk_of_sse_events() -> None:
    rid = new_id()

    async def one_batch() -> AsyncIterator[list[LoggedEvent]]:
        yield [started(rid, 0), token(rid, 1, 0), token(rid, 2, 1), ended(rid, 3)]

    chunks = [chunk async for chunk in responses._as_sse(one_batch())]

    assert len(chunks) == 1
    assert chunks[0].count(b"event: token") == 2 and b"id: 3" in chunks[0] and b"event: done" in chunks[0]


async def test_a_feed_whose_consumer_fails_after_attaching_ends_the_process(monkeypatch) -> None:
    """Its streams would wait for tokens that never come; ending it lets the supervisor restart it."""
    exits = recorded_exits(monkeypatch)
    monkeypatch.setattr(TokenFeed, "_attach", lambda self, consumer: None)

    def fatal(consumer, timeout_s):
        raise KafkaException(KafkaError(KafkaError._FATAL))

    monkeypatch.setattr(token_feed, "next_batch", fatal)
    feed = TokenFeed(QUEUE)
    feed.start()
    try:
        assert await asyncio.to_thread(exits.happened.wait, 5)
    finally:
        feed.stop()
    assert exits.statuses == [EXIT_WEDGED]
