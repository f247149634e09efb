"""Every API process knows the owner of a conversation or a response another process just took,
from that process's record in Redis, without waiting for the history view (which lags the log
for seconds while the projection restarts or rebalances); a deletion marker still wins."""

from typing import cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from ingest_api.ownership import Ownership, ResponseOwner, deleted_key
from projections.live import LiveContext, LiveHistory
from projections.watermark_signals import WatermarkSignals

CONVERSATION = "01a2355c-7401-72b8-8dc5-c032312d9cd4"  # minted long ago: the view is not waited for
RESPONSE = "01a2355c-7401-72b8-8dc5-c032312d9cd5"


class SharedRedis:
    """One Redis for every process: strings, or refusing every command when `down`."""

    def __init__(self, down: bool = False) -> None:
        self.values: dict[str, str] = {}
        self._down = down

    def _up(self) -> None:
        if self._down:
            raise RedisConnectionError("Connection refused")

    async def set(self, key: str, value: str, ex: int | None = None) -> bool:
        self._up()
        self.values[key] = value
        return True

    async def get(self, key: str) -> str | None:
        self._up()
        return self.values.get(key)

    async def mget(self, *keys: str) -> list[str | None]:
        self._up()
        return [self.values.get(key) for key in keys]

    async def exists(self, key: str) -> int:
        self._up()
        return int(key in self.values)


class BehindHistory:
    """A history view that has applied nothing yet, counting how often it is asked."""

    def __init__(self) -> None:
        self.asked = 0

    async def conversation_owner(self, conversation_id: str) -> None:
        self.asked += 1

    async def response(self, response_id: str) -> None:
        self.asked += 1


def process(redis: SharedRedis, history: BehindHistory) -> Ownership:
    """One API process's ownership checks (its own memory, the shared Redis and view)."""
    return Ownership(
        cast(LiveHistory, history), cast(LiveContext, None), cast(Redis, redis), cast(WatermarkSignals, None)
    )


async def test_a_conversation_started_by_one_process_is_its_owners_in_another_before_the_view_has_it() -> None:
    redis, history = SharedRedis(), BehindHistory()
    await process(redis, history).record_start(CONVERSATION, "ada")
    other = process(redis, history)

    await other.check_conversation(CONVERSATION, "ada")
    with pytest.raises(Exception, match="404"):
        await other.check_conversation(CONVERSATION, "bob")
    assert history.asked == 0


async def test_a_response_submitted_through_one_process_is_its_owners_in_another_before_the_view_has_it() -> None:
    redis, history = SharedRedis(), BehindHistory()
    first = process(redis, history)
    await first.record_start(CONVERSATION, "ada")
    await first.record_submission(RESPONSE, ResponseOwner(CONVERSATION, "ada", "message-1"))
    other = process(redis, history)

    assert await other.check_response(RESPONSE, "ada") == ResponseOwner(CONVERSATION, "ada", "message-1")
    with pytest.raises(Exception, match="404"):
        await other.check_response(RESPONSE, "bob")
    assert history.asked == 0


async def test_a_deletion_marker_wins_over_the_record() -> None:
    redis, history = SharedRedis(), BehindHistory()
    await process(redis, history).record_start(CONVERSATION, "ada")
    redis.values[deleted_key(CONVERSATION)] = "1"

    with pytest.raises(Exception, match="404"):
        await process(redis, history).check_conversation(CONVERSATION, "ada")


async def test_without_a_record_the_view_is_asked() -> None:
    history = BehindHistory()

    with pytest.raises(Exception, match="404"):
        await process(SharedRedis(), history).check_response(RESPONSE, "ada")
    assert history.asked == 1


async def test_with_redis_down_a_record_is_not_written_and_the_write_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    owners = process(SharedRedis(down=True), BehindHistory())

    await owners.record_start(CONVERSATION, "ada")
    await owners.record_submission(RESPONSE, ResponseOwner(CONVERSATION, "ada", "message-1"))

    assert caplog.text.count("is not recorded (Connection refused)") == 2
