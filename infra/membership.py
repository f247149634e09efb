"""Whether a consumer process still does its share of its group's work, and how long it has not.

A Kafka client can wedge and never come back, the process alive and reading nothing, in two ways.

Out of its group: aiokafka (Faust's client) across a broker restart, where a coordinator lookup
begun while the broker was down never returns; librdkafka after a frozen broker's return, where
the projections' consumer, its session timed out and its partitions revoked, never joined again.

In its group, holding partitions it does not read: the processors after a frozen broker's return
(a clean-clone CI run), Faust's rebalance having paused the newly assigned partitions and never
resumed them. Heartbeats go on, so the group stays stable and no membership check sees it; only
the offsets do: records wait past the group's committed offset, and that offset does not move.

In Kubernetes the liveness probe (`infra.k8s.probe`) restarts a process out of its group; under
supervisord nothing would, and nothing at all restarts one that holds partitions. So such a process
asks the group's coordinator every few seconds where it stands (`infra.kafka_clients.standing`).
Once it has been out of its group for `settings.kafka.membership_grace_s`, or a partition of its has
held records past an unmoving committed offset for `settings.kafka.stall_grace_s`, while Kafka
answered, it ends, and the supervisor restarts it from the committed offsets. A Kafka that does not
answer says nothing about the process, and neither does a store it waits on (unreachable, or a
view behind: `infra.store_errors.STORE_WAITS`): the grace period starts again after either.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from infra.kafka_clients import Standing, standing
from infra.settings import settings
from infra.store_errors import STORE_WAITS, StoreWaits

CHECK_EVERY_S = 5.0
log = logging.getLogger(__name__)


class GroupWatchdog:
    """How long the process has been out of its group, or stalled in it, while Kafka answered."""

    def __init__(
        self,
        group_id: str,
        membership_grace_s: float,
        stall_grace_s: float,
        store_waits: StoreWaits = STORE_WAITS,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._group_id = group_id
        self._membership_grace_s = membership_grace_s
        self._stall_grace_s = stall_grace_s
        self._store_waits = store_waits
        self._now = now
        self._member_at = now()  # when the process was last a member, or Kafka last did not answer
        self._stuck_since: dict[tuple[str, int], tuple[int, float]] = {}  # partition: committed offset, since when

    def wedged(self, found: Standing | None) -> str | None:
        """Record one check (None: Kafka did not answer it); why the process should end, once it should."""
        now = self._now()
        if found is None or found.member:
            self._member_at = now
        if found is None:
            self._stuck_since.clear()
            return None
        if not found.member and now - self._member_at >= self._membership_grace_s:
            return f"not a member of consumer group {self._group_id} for {self._membership_grace_s:g} s"
        return self._stalled(found.behind, now)

    def _stalled(self, behind: dict[tuple[str, int], int], now: float) -> str | None:
        """Why, once a partition has held records past the same committed offset for the grace
        period, counted from the latest wait on a store if that came later."""
        stuck: dict[tuple[str, int], tuple[int, float]] = {}
        for where, offset in behind.items():
            previous = self._stuck_since.get(where)
            stuck[where] = previous if previous is not None and previous[0] == offset else (offset, now)
        self._stuck_since = stuck
        for (topic, partition), (offset, since) in sorted(self._stuck_since.items()):
            if now - max(since, self._store_waits.last) >= self._stall_grace_s:
                return (
                    f"records of {topic}[{partition}] past consumer group {self._group_id}'s committed offset"
                    f" {offset} unread for {self._stall_grace_s:g} s"
                )
        return None


class GroupCheck:
    """This process's standing in its group, asked with one admin client until a check fails.

    A failed check replaces the client: one kept across a frozen broker's return had stale
    partition leader epochs, and every offsets lookup it made was refused (FENCED_LEADER_EPOCH)
    for as long as the process ran, blinding the watchdog (the chaos suite's frozen broker).
    """

    def __init__(self, group_id: str) -> None:
        self._group_id = group_id
        self._admin: AdminClient | None = None
        self._unanswered_since: float | None = None

    def __call__(self) -> Standing | None:
        """The standing; None when Kafka does not answer (blocks: call it in a thread). When Kafka
        stops and starts answering is logged: a wedge the checks could not see would show there."""
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap, "log_level": 0})
        try:
            found = standing(self._admin, self._group_id, os.getpid())
        except (KafkaException, TimeoutError) as exc:
            self._admin = None
            if self._unanswered_since is None:
                self._unanswered_since = time.monotonic()
                log.warning("Kafka did not answer the watchdog's check of group %s (%r)", self._group_id, exc)
            return None
        if self._unanswered_since is not None:
            unanswered_s = time.monotonic() - self._unanswered_since
            log.warning("Kafka answers the checks of group %s again after %.0f s", self._group_id, unanswered_s)
            self._unanswered_since = None
        return found
