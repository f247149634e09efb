"""An API started while Kafka does not answer (a deploy during a broker restart): its token feed
keeps trying to position itself and streams begin once it has, instead of the feed's thread
dying on its first timeout and the process staying unready, its streams waiting, for good."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from ingest_api.token_feed import TokenFeed
from tests.chaos.faults import server_pid, until

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(180)]


async def test_a_feed_started_while_kafka_is_paused_is_positioned_once_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ingest_api.token_feed")
    kafka = server_pid("kafka")
    feed = TokenFeed(subscriber_queue=16)
    os.killpg(kafka, signal.SIGSTOP)
    try:
        feed.start()
        await asyncio.to_thread(until, lambda: "again in" in caplog.text, 60, "the feed's first try timing out")
    finally:
        os.killpg(kafka, signal.SIGCONT)
    try:
        await asyncio.wait_for(feed.ready(), timeout=60)
        await asyncio.to_thread(until, lambda: feed.healthy, 60, "the feed consuming")
        assert not feed.closing
    finally:
        await asyncio.to_thread(feed.stop)
