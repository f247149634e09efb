"""Where the processors resume a partition after a rebalance: its committed offset, never the log's
start because a broker was busy.

aiokafka (Faust's client) reads a group's committed offsets with OffsetFetch v2 or later, and
ignores the response's top-level error. A group coordinator that is still loading the group's
offsets (a broker just back from a freeze or a restart) answers with that error and no partitions
at all (Kafka's `OffsetFetchRequest.getErrorResponse`), which aiokafka takes for "no committed
offset": the consumer then resets to the earliest offset and reads the conversation log again from
its start. A clean-clone CI run saw it after a frozen broker: ~100 records a partition handled
again, twice, every MessageAccepted and InferenceRequested of them written again, and the replies
of the moment queued behind them past their 30 s timeout. Consumers downstream absorb the
duplicates (rule 2), but on a log of months the replay would never end.

So where aiokafka found no committed offset, the consumer asks librdkafka's admin client, which
reports such an error instead of an empty answer, and seeks to the offset it gives. It asks again
until Kafka answers, for at most `LOOKUP_S`; past that the lookup fails, Faust's recovery crashes
the app, and the supervisor restarts it, to read the offsets afresh. A group that never committed
(a new deployment) gets no offset from either, and starts where `consumer_auto_offset_reset` says.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import ClassVar

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerT

from infra.backoff import doubling
from infra.kafka_clients import committed_offsets
from infra.settings import settings

LOOKUP_S = 60.0
log = logging.getLogger(__name__)


class CommittedOffsetsConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, its partitions sought to the offsets the group really committed."""

    async def seek_to_committed(self) -> Mapping[TP, int]:
        found = dict(await super().seek_to_committed())
        unknown = [tp for tp, offset in found.items() if offset is None or offset < 0]
        if not unknown:
            return found
        known = await asyncio.to_thread(_committed, self.app.conf.id, unknown)  # Faust's group id is the app's
        for tp, offset in known.items():
            log.warning("%s: aiokafka found no committed offset; the group's is %d: seeking there", tp, offset)
            await self.seek(tp, offset)
            found[tp] = offset
        return found


class CommittedOffsetsTransport(faust_aiokafka.Transport):
    """The aiokafka transport, with the consumer above."""

    Consumer: ClassVar[type[ConsumerT]] = CommittedOffsetsConsumer


def _committed(group_id: str, partitions: list[TP]) -> dict[TP, int]:
    """The group's committed offsets of those partitions that have one, asked until Kafka answers."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap, "log_level": 0})
    wanted = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    deadline, waits = time.monotonic() + LOOKUP_S, doubling(0.1, 2.0)
    while True:
        try:
            offsets = committed_offsets(admin, group_id, wanted)
        except (KafkaException, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("the committed offsets of group %s: Kafka did not answer (%r); asking again", group_id, exc)
            time.sleep(next(waits))
            continue
        return {TP(tp.topic, tp.partition): offset for tp, offset in offsets.items() if offset >= 0}
