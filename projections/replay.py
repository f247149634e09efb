"""Rebuild the views from the conversation log: `python -m projections.replay [--reset]`.

Replay reads the log from its beginning up to the end offsets it finds when it starts, and
applies every record through the same `Projector` as the live runner, so it builds the same state.

Without `--reset` it is safe beside the live runner: history writes carry event-derived write
timestamps (the latest lifecycle stage wins, whoever writes last), and the context cache skips
what its watermark already covers. `--reset` empties both views first, and refuses while the live
runner's consumer group has members: a runner writing new events into an emptied cache would move
its watermark past conversations the replay has not rebuilt yet.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from infra import kafka_clients
from infra.process import say
from infra.settings import settings
from projections.projector import STORE_UNAVAILABLE, Projector, connected, lanes
from projections.runner import BATCH_SIZE, GROUP, POLL_S
from schemas.events import new_id
from schemas.topics import CONVERSATIONS, Topic

REPORT_EVERY_S = 1.0


class LiveRunnerError(RuntimeError):
    """`--reset` was asked for while the live runner is consuming."""


@dataclass
class Progress:
    total: int
    applied: int = 0
    skipped: int = 0  # records no view could apply: the live runner dead-lettered them
    started: float = field(default_factory=time.monotonic)

    def __str__(self) -> str:
        done = self.applied + self.skipped
        rate = done / max(time.monotonic() - self.started, 1e-9)
        return f"{done}/{self.total} events ({rate:.0f}/s), {self.skipped} skipped"


def say_progress(progress: Progress) -> None:
    say(f"replay: {progress}")


async def replay(
    projector: Projector,
    report: Callable[[Progress], None] = say_progress,
    conversations: Topic = CONVERSATIONS,
) -> Progress:
    """Apply the conversation log, as it stands now, to the projector's views.

    `conversations` is a parameter so that tests can replay a scratch copy of the log.
    """
    consumer = kafka_clients.consumer(f"steno-replay-{new_id()}")  # only assign(): joins no group
    try:
        ends = _assign_from_beginning(consumer, conversations)
        progress = Progress(total=sum(high - low for low, high in ends.values()))
        remaining = {partition: high for partition, (low, high) in ends.items() if high > low}
        last_report = time.monotonic()
        while remaining:
            records = await asyncio.to_thread(kafka_clients.next_batch, consumer, POLL_S, BATCH_SIZE)
            for failed in (r for r in records if r.error() is not None):
                raise KafkaException(failed.error())
            wanted = [r for r in records if r.offset() < remaining.get(r.partition(), -1)]
            await asyncio.gather(*(_apply_in_order(projector, lane, progress) for lane in lanes(wanted)))
            _drop_finished(consumer, conversations, remaining)
            if time.monotonic() - last_report >= REPORT_EVERY_S:
                last_report = time.monotonic()
                report(progress)
        report(progress)
        return progress
    finally:
        consumer.close()


def _assign_from_beginning(consumer: Consumer, topic: Topic) -> dict[int, tuple[int, int]]:
    """Assign every partition at its first offset; returns partition -> (first, end) offsets."""
    ends = {
        partition: consumer.get_watermark_offsets(TopicPartition(topic.name, partition), timeout=10)
        for partition in range(topic.partitions)
    }
    consumer.assign([TopicPartition(topic.name, p, low) for p, (low, _) in ends.items()])
    return ends


def _drop_finished(consumer: Consumer, topic: Topic, remaining: dict[int, int]) -> None:
    """Forget the partitions whose position reached the end offset taken at the start."""
    positions = consumer.position([TopicPartition(topic.name, p) for p in remaining])
    for position in positions:
        if position.offset >= remaining[position.partition]:
            del remaining[position.partition]


async def _apply_in_order(projector: Projector, lane: list[Message], progress: Progress) -> None:
    for record in lane:
        try:
            await projector.apply(record)
            progress.applied += 1
        except STORE_UNAVAILABLE:
            raise  # replay is safe to run again: stop, and let the operator rerun it once the store is back
        except Exception as exc:  # a poison pill: the live runner dead-lettered it; move on (rule 7)
            progress.skipped += 1
            say(f"replay: skipped {record.topic()}[{record.partition()}]@{record.offset()}: {exc}")


async def empty_views(projector: Projector, live_group: str = GROUP) -> None:
    """Empty both views, so the replay rebuilds them from nothing; refused while the runner runs."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    members = len(admin.describe_consumer_groups([live_group])[live_group].result(timeout=10).members)
    if members:
        raise LiveRunnerError(
            f"consumer group {live_group} has {members} member(s): stop `python -m projections` first"
        )
    await projector.history.truncate()
    await projector.context.clear()


async def _rebuild(reset: bool) -> None:
    async with connected() as projector:
        if reset:
            await empty_views(projector)
            say("replay: views emptied")
        await replay(projector)


def run(reset: bool = False) -> None:
    """The operator's entry point (`steno replay`, `python -m projections.replay`)."""
    try:
        asyncio.run(_rebuild(reset))
    except LiveRunnerError as exc:
        raise SystemExit(f"replay: {exc}") from exc


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m projections.replay", description=__doc__.splitlines()[0])
    parser.add_argument("--reset", action="store_true", help="empty the views first (stop the runner before)")
    logging.basicConfig(level=logging.WARNING)
    run(reset=parser.parse_args().reset)


if __name__ == "__main__":
    main()
