"""A conversation's creator waits until the live views have applied its start (read-your-writes),
told by the active context's watermark, read again when its move is signalled, rather than by
polling the history view."""

import asyncio
from typing import cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from ingest_api.ownership import Ownership
from projections.live import LiveContext, LiveHistory
from projections.watermark_signals import WatermarkSignals


class Watermark:
    """A live context whose watermark moves one record a read, from `start`; or whose Redis is down.
    With `signals`, each move is published, as the projection's apply script does."""

    def __init__(self, start: int, down: bool = False, signals: "Signals | None" = None) -> None:
        self.reads = 0
        self._start = start
        self._down = down
        self._signals = signals

    async def applied_offset(self, partition: int) -> int:
        if self._down:
            raise RedisConnectionError("Connection refused")
        self.reads += 1
        if self._signals is not None:
            self._signals.publish(partition)
        return self._start + self.reads - 1


class Signals:
    """Watermark signals whose moves are published by hand (none, unless a test publishes)."""

    def __init__(self) -> None:
        self._next: dict[int, asyncio.Event] = {}

    def next(self, partition: int) -> asyncio.Event:
        return self._next.setdefault(partition, asyncio.Event())

    def publish(self, partition: int) -> None:
        if (moved := self._next.pop(partition, None)) is not None:
            moved.set()


class History:
    """The history view, counting how often it is asked for an owner."""

    def __init__(self, owner: str | None) -> None:
        self.asked = 0
        self._owner = owner

    async def conversation_owner(self, conversation_id: str) -> str | None:
        self.asked += 1
        return self._owner


class NoMarkers:
    """A Redis holding no deletion marker and no owner's record."""

    async def exists(self, key: str) -> int:
        return 0

    async def mget(self, *keys: str) -> list[None]:
        return [None] * len(keys)


def ownership(context: Watermark, history: History, signals: Signals | None = None) -> Ownership:
    return Ownership(
        cast(LiveHistory, history),
        cast(LiveContext, context),
        cast(Redis, NoMarkers()),
        cast(WatermarkSignals, signals or Signals()),
    )


async def test_the_creator_waits_for_the_watermark_then_knows_the_owner_without_asking_history() -> None:
    context, history = Watermark(start=7), History(owner=None)
    owners = ownership(context, history)

    await owners.created("01a2355c-7401-72b8-8dc5-c032312d9cd4", "ada", partition=3, offset=10)
    await owners.check_conversation("01a2355c-7401-72b8-8dc5-c032312d9cd4", "ada")

    assert context.reads == 4  # 7, 8, 9, then 10: applied
    assert history.asked == 0


async def test_a_signalled_move_of_the_watermark_is_read_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ingest_api.ownership.WATERMARK_POLL_S", 3600.0)  # no poll: only signals wake it
    signals = Signals()
    context = Watermark(start=7, signals=signals)
    owners = ownership(context, History(owner=None), signals)

    await asyncio.wait_for(owners.created("01a2355c-7401-72b8-8dc5-c032312d9cd4", "ada", partition=3, offset=10), 5)

    assert context.reads == 4


async def test_with_redis_down_the_creator_asks_the_history_view() -> None:
    history = History(owner="ada")
    owners = ownership(Watermark(start=0, down=True), history)

    await owners.created("01a2355c-7401-72b8-8dc5-c032312d9cd4", "ada", partition=3, offset=10)

    assert history.asked == 1


async def test_a_start_the_views_have_not_applied_in_time_is_still_its_creators() -> None:
    owners = ownership(Watermark(start=0, down=True), History(owner=None))

    await owners.created("01a2355c-7401-72b8-8dc5-c032312d9cd4", "ada", partition=3, offset=10)

    await owners.check_conversation("01a2355c-7401-72b8-8dc5-c032312d9cd4", "ada")
    with pytest.raises(Exception, match="404"):
        await owners.check_conversation("01a2355c-7401-72b8-8dc5-c032312d9cd4", "bob")


async def test_a_watermark_that_stays_behind_is_waited_for_a_bounded_time_and_history_is_not_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("ingest_api.ownership.PROJECTION_WAIT_S", 0.05)
    context, history = Watermark(start=0), History(owner=None)
    owners = ownership(context, history)

    await owners.created("01a2355c-7401-72b8-8dc5-c032312d9cd4", "ada", partition=3, offset=10**9)
    await owners.check_conversation("01a2355c-7401-72b8-8dc5-c032312d9cd4", "ada")

    assert 1 <= context.reads <= 10  # read every 10 ms (WATERMARK_POLL_S), no signal, for 50 ms: ~5 reads
    assert history.asked == 0  # Kafka has the start under the creator's name: the view is not asked
