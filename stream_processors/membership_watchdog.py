"""Stops the Faust worker when it has fallen out of its consumer group and does not come back.

aiokafka, Faust's Kafka client, can wedge across a broker restart: a group-coordinator lookup
begun while the broker was down never returns, and heartbeats, the rejoin and offset commits all
wait behind its lock. The worker is then alive but holds no partitions and answers nothing (the
chaos suite's `kill -9 kafka` fault caught it once). So the app checks its membership every few
seconds (`infra.membership`), and crashes once it has been out of its group for the grace period
while Kafka answered; the supervisor restarts it from the committed offsets.

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
import threading

from infra import wedged

log = logging.getLogger(__name__)
DEADLINE_THREAD = "steno-stop-deadline"


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
