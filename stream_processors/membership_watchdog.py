"""Stops the Faust worker when it has fallen out of its consumer group and does not come back.

aiokafka, Faust's Kafka client, can wedge across a broker restart: a group-coordinator lookup
begun while the broker was down never returns, and heartbeats, the rejoin and offset commits all
wait behind its lock. The worker is then alive but holds no partitions and answers nothing (the
chaos suite's `kill -9 kafka` fault caught it once). In Kubernetes the liveness probe
(`infra.k8s.probe`) restarts such a process; under supervisord nothing would. So the worker asks
what the probe asks, every few seconds: is this process a member of a stable group, as the
group's coordinator sees it? Once it has not been for `settings.kafka.membership_grace_s` while
Kafka answered, the app crashes, and the supervisor restarts it from the committed offsets. A
Kafka that does not answer says nothing about the worker: the wait starts again when it does.

The same wedge keeps the crashed worker from stopping: aiokafka's consumer close awaits its
coordination task, which waits on that lookup forever, and a process that never exits is never
restarted. A crash for another reason (an event Kafka refused) can hang the stop too: the crash
ends Faust's consumer thread, and a stop whose final commit is handed to that thread as it ends
(mode's `call_thread`: the call is queued on the thread's loop, which then never runs it) waits
forever. So every crash arms a deadline (`StopDeadline`): past it the process ends as `kill -9`
would end it, which loses nothing (offsets are committed only for records whose events Kafka
acknowledged).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaException

from infra import wedged
from infra.kafka_clients import stable_member

CHECK_EVERY_S = 5.0
log = logging.getLogger(__name__)
DEADLINE_THREAD = "steno-stop-deadline"


class MembershipWatchdog:
    """How long the worker has been out of its group while Kafka answered."""

    def __init__(self, grace_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self._grace_s = grace_s
        self._now = now
        self._accounted_for = now()  # when the worker was last a member, or Kafka last did not answer

    def lost(self, member: bool | None) -> bool:
        """Record one check (None: Kafka did not answer it); True once the worker has been out of
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


class StopDeadline:
    """Ends the process `deadline_s` after `arm()` unless a stop completes first.

    Used as a context of the Faust app (`app.add_context`): the app's exit stack closes only
    after its children, the consumer among them, have stopped, so a stop stuck in the wedge
    leaves the deadline armed, and one that completes disarms it (in tests, the process goes on).
    """

    def __init__(self, deadline_s: float) -> None:
        self._deadline_s = deadline_s
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        """Start the countdown (once: a second crash does not move the deadline)."""
        if self._timer is None:
            self._timer = threading.Timer(self._deadline_s, self._end_wedged)
            self._timer.name = DEADLINE_THREAD
            self._timer.daemon = True  # a stop that ends the process in time exits as usual
            self._timer.start()

    def __enter__(self) -> StopDeadline:
        return self

    def __exit__(self, *_: object) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _end_wedged(self) -> None:
        why = f"the worker did not stop within {self._deadline_s:g} s of its crash (its consumer is wedged)"
        wedged.exit_wedged(why)
