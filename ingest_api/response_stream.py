"""The events of one response, for one SSE client: exactly those after its last position.

Live events and the backlog are stitched together without gap or duplicate (rule 5): the
client subscribes to the live feed *before* reading the backlog, so anything written meanwhile
is queued, and every event is passed on only if its offset is past the last one sent. Both
wait for the feed to be ready (`TokenFeed.ready`): until it has fixed where it tails from, what
is written after the backlog's read might reach neither.

An event of an attempt older than one already in the log is not passed on: it is a late write
of an attempt that was given up (a token sent to a broker that hung, acknowledged by nobody, then
stored once the broker came back, after the next attempt's ResponseRestarted). The attempt's
fence stops what it would still send, not what it already sent; the log is ordered, so whatever
follows a ResponseRestarted with an older attempt can only be such a write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from confluent_kafka import KafkaException

from infra.backoff import doubling
from infra.partition_reads import PartitionReadIncomplete
from ingest_api.log_reader import read_response
from ingest_api.positions import LoggedEvent
from ingest_api.token_feed import Subscription, TokenFeed

LOG_RETRY_FIRST_S = 0.2
LOG_RETRY_MAX_S = 2.0

log = logging.getLogger(__name__)


async def response_events(
    feed: TokenFeed, conversation_id: str, response_id: str, after_offset: int | None
) -> AsyncIterator[LoggedEvent]:
    """Yield the response's events after `after_offset`, live, until the response ends (or the
    process shuts down: `TokenFeed.close_streams`)."""
    async for batch in response_batches(feed, conversation_id, response_id, after_offset):
        for item in batch:
            yield item


async def response_batches(
    feed: TokenFeed, conversation_id: str, response_id: str, after_offset: int | None
) -> AsyncIterator[list[LoggedEvent]]:
    """`response_events`, in the batches they arrive in (the backlog, then each burst of live
    events), for a writer that sends a batch as one chunk."""
    last = -1 if after_offset is None else after_offset
    await feed.ready()
    while True:  # one round per (re)subscription; a slow client overflows and comes back here
        subscription = feed.subscribe(response_id)
        newest = NewestAttempt()  # each round reads the response from its start
        try:
            earlier = newest.of(await backlog(feed, conversation_id, response_id))
            if any(i.ends and i.offset <= last for i in earlier):
                return  # the client already has the end
            async for arrived in _merged(earlier, subscription, newest):
                batch = [item for item in arrived if item.offset > last]
                ended = next((n for n, i in enumerate(batch) if i.ends), None)
                if ended is not None:
                    batch = batch[: ended + 1]
                if batch:
                    last = batch[-1].offset
                    yield batch
                if ended is not None:
                    return
        finally:
            feed.unsubscribe(subscription)
        if feed.closing:
            return  # the process is shutting down; the client resumes from `last` elsewhere


class NewestAttempt:
    """Passes a response's events, read in log order from its start, less those of an attempt
    older than one already seen (late writes of an attempt given up; see the module's docstring)."""

    def __init__(self) -> None:
        self._attempt = 0

    def of(self, items: list[LoggedEvent]) -> list[LoggedEvent]:
        kept = []
        for item in items:
            if item.attempt >= self._attempt:
                self._attempt = item.attempt
                kept.append(item)
        return kept


async def _merged(
    earlier: list[LoggedEvent], live: Subscription, newest: NewestAttempt
) -> AsyncIterator[list[LoggedEvent]]:
    yield earlier
    async for batch in live.batches():
        yield newest.of(batch)


async def backlog(feed: TokenFeed, conversation_id: str, response_id: str) -> list[LoggedEvent]:
    """Every event of the response so far: from the feed's memory, else from the log.

    A log that cannot be read completely now (Kafka restarting) is read again, with a back-off,
    for as long as the client waits: a partial backlog would leave a gap before the live events.
    """
    remembered = feed.remembered(response_id)
    if remembered is not None:
        return remembered
    waits = doubling(LOG_RETRY_FIRST_S, LOG_RETRY_MAX_S)
    while True:
        try:
            return await asyncio.to_thread(read_response, conversation_id, response_id)
        except (KafkaException, PartitionReadIncomplete) as exc:
            wait = next(waits)
            log.warning("reading response %s from the log failed (%s); again in %.1fs", response_id, exc, wait)
            await asyncio.sleep(wait)
