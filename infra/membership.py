"""Whether a consumer process is still in its group, and how long it has been out of it.

A Kafka client can wedge out of its consumer group and never come back, the process alive but
holding no partitions: aiokafka (Faust's client) across a broker restart, where a coordinator
lookup begun while the broker was down never returns; librdkafka after a frozen broker's return,
where the projections' consumer, its session timed out and its partitions revoked, never joined
again (the chaos suite saw it). In Kubernetes the liveness probe (`infra.k8s.probe`) restarts
such a process; under supervisord nothing would. So such a process asks what the probe asks,
every few seconds: is it a stable member of its group, as the group's coordinator sees it? Once
it has not been for `settings.kafka.membership_grace_s` while Kafka answered, it ends, and the
supervisor restarts it from the committed offsets. A Kafka that does not answer says nothing about
the process: the wait starts again when it does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from confluent_kafka import KafkaException

from infra.kafka_clients import stable_member

CHECK_EVERY_S = 5.0


class MembershipWatchdog:
    """How long the process has been out of its group while Kafka answered."""

    def __init__(self, grace_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self._grace_s = grace_s
        self._now = now
        self._accounted_for = now()  # when the process was last a member, or Kafka last did not answer

    def lost(self, member: bool | None) -> bool:
        """Record one check (None: Kafka did not answer it); True once the process has been out of
        its group for the grace period with Kafka answering."""
        if member is not False:
            self._accounted_for = self._now()
            return False
        return self._now() - self._accounted_for >= self._grace_s


def membership(group_id: str) -> bool | None:
    """Whether this process is a stable member of the group; None when Kafka does not answer."""
    try:
        return stable_member(group_id, os.getpid())
    except (KafkaException, TimeoutError):
        return None
