"""The projections commit handled offsets sparsely: not after every batch, never before the effect."""

from __future__ import annotations

from typing import cast

from confluent_kafka import Consumer, Message, TopicPartition

from projections.consuming import SparseCommits

TOPIC = "steno.conversations"


class Committed:
    """Stands in for the consumer: records what is committed."""

    def __init__(self) -> None:
        self.commits: list[dict[int, int]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert not asynchronous
        self.commits.append({p.partition: p.offset for p in offsets})


def records(*positions: tuple[int, int]) -> list[Message]:
    return [Message(topic=TOPIC, partition=partition, offset=offset) for partition, offset in positions]


def sparse(every_s: float) -> tuple[SparseCommits, Committed]:
    consumer = Committed()
    return SparseCommits(cast(Consumer, consumer), every_s), consumer


async def test_batches_handled_close_together_are_committed_once_past_their_last_records() -> None:
    commits, consumer = sparse(every_s=3600)
    commits.handled(records((0, 5), (1, 7)))
    await commits.commit(unless_recent=True)
    commits.handled(records((0, 6)))
    await commits.commit(unless_recent=True)

    assert consumer.commits == []
    await commits.commit(unless_recent=False)  # the consumer found nothing new, or the runner stops
    assert consumer.commits == [{0: 7, 1: 8}]


async def test_a_commit_is_due_once_every_s_has_passed() -> None:
    commits, consumer = sparse(every_s=0)
    commits.handled(records((2, 9)))
    await commits.commit(unless_recent=True)

    assert consumer.commits == [{2: 10}]


async def test_revoked_partitions_are_left_to_their_new_owner() -> None:
    commits, consumer = sparse(every_s=3600)
    commits.handled(records((0, 5), (1, 7)))
    commits.forget([TopicPartition(TOPIC, 1)])
    await commits.commit(unless_recent=False)
    await commits.commit(unless_recent=False)  # nothing handled since: nothing to commit

    assert consumer.commits == [{0: 6}]
