"""What the processor knows of a conversation's earlier records from reading its partition (rule 3)."""

from infra.kafka_clients import Record
from stream_processors.conversation_positions import STARTED, ConversationPositions, Earlier

SUBMITTED = "MessageSubmitted"


def read(positions: ConversationPositions, offset: int, conversation: str, kind: str, partition: int = 0) -> Earlier:
    return positions.observe(Record("conversations", partition, offset, conversation.encode(), b"{}"), kind)


def test_the_first_message_of_a_conversation_read_from_its_start_has_no_earlier_turns() -> None:
    positions = ConversationPositions()
    read(positions, 10, "a", STARTED)

    assert read(positions, 11, "a", SUBMITTED) == Earlier(covered_at=10, turns=False)


def test_a_later_message_needs_its_conversations_latest_record_applied_not_other_conversations() -> None:
    positions = ConversationPositions()
    read(positions, 10, "a", STARTED)
    read(positions, 11, "a", SUBMITTED)
    read(positions, 12, "a", "ResponseCompleted")
    for offset in range(13, 20):
        read(positions, offset, "b", SUBMITTED)

    assert read(positions, 20, "a", SUBMITTED) == Earlier(covered_at=12, turns=True)


def test_a_conversation_whose_start_was_not_read_needs_every_earlier_record_applied() -> None:
    positions = ConversationPositions()
    read(positions, 10, "a", SUBMITTED)
    read(positions, 11, "b", STARTED)

    assert read(positions, 12, "a", SUBMITTED) == Earlier.unknown(12) == Earlier(covered_at=11, turns=True)


def test_a_break_in_the_partitions_offsets_forgets_what_was_read_of_it() -> None:
    """Reassigned after another instance read some of the partition (a gap), or rewound."""
    positions = ConversationPositions()
    read(positions, 10, "a", STARTED)
    read(positions, 10, "b", STARTED, partition=1)

    assert read(positions, 12, "a", SUBMITTED) == Earlier.unknown(12)  # offset 11 was read elsewhere
    assert read(positions, 11, "b", SUBMITTED, partition=1) == Earlier(10, turns=False)  # other partitions keep theirs
    read(positions, 5, "c", STARTED)  # a rewind
    assert read(positions, 6, "a", SUBMITTED) == Earlier.unknown(6)


def test_a_second_start_of_a_known_conversation_is_not_taken_for_a_new_one() -> None:
    positions = ConversationPositions()
    read(positions, 10, "a", SUBMITTED)
    read(positions, 11, "a", STARTED)

    assert read(positions, 12, "a", SUBMITTED) == Earlier.unknown(12)


def test_the_least_recently_read_conversation_is_forgotten_beyond_the_bound() -> None:
    positions = ConversationPositions(remembered_per_partition=2)
    read(positions, 10, "a", STARTED)
    read(positions, 11, "b", STARTED)
    read(positions, 12, "a", SUBMITTED)  # "a" read again: "b" is now the least recent
    read(positions, 13, "c", STARTED)

    assert read(positions, 14, "b", SUBMITTED) == Earlier.unknown(14)
    assert read(positions, 15, "c", SUBMITTED) == Earlier(13, turns=False)


def test_a_record_without_a_key_says_nothing_of_any_conversation() -> None:
    positions = ConversationPositions()
    read(positions, 10, "a", STARTED)

    assert positions.observe(Record("conversations", 0, 11, None, b"{}"), SUBMITTED) == Earlier.unknown(11)
    assert read(positions, 12, "a", SUBMITTED) == Earlier(10, turns=False)
