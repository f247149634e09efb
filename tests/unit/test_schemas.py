"""The event contract: round trips, discrimination by type, poison pills, exported schemas."""

import json

import pytest

from schemas import export
from schemas.events import MessageSubmitted, TokenGenerated, new_id
from schemas.serde import UndecodableEvent, decode, encode


def test_event_round_trips_through_the_serialiser() -> None:
    event = MessageSubmitted(
        conversation_id="c1", user_id="u1", message_id="m1", response_id="r1", content="héllo", model="smollm2"
    )
    assert decode(encode(event)) == event


def test_decode_picks_the_class_named_by_type() -> None:
    token = TokenGenerated(conversation_id="c", user_id="u", response_id="r", seq=3, text="hi")
    decoded = decode(encode(token))
    assert isinstance(decoded, TokenGenerated)
    assert decoded.seq == 3


@pytest.mark.parametrize(
    "raw",
    [None, b"", b"not json", b'{"type": "Nope"}', b'{"type": "TokenGenerated", "seq": 1}'],
)
def test_garbage_is_rejected_as_undecodable(raw: bytes | None) -> None:
    with pytest.raises(UndecodableEvent):
        decode(raw)


def test_every_event_carries_the_common_fields() -> None:
    for name, text in export.rendered().items():
        if name == "DeadLetter.json":
            continue
        properties = json.loads(text)["properties"]
        for field in ("type", "schema_version", "event_id", "occurred_at", "conversation_id", "user_id"):
            assert field in properties, f"{name} lacks {field}"


def test_event_ids_are_time_ordered() -> None:
    ids = [new_id() for _ in range(100)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 100


def test_committed_json_schemas_are_current() -> None:
    for name, text in export.rendered().items():
        committed = export.OUT_DIR / name
        assert committed.exists(), f"{committed} missing: run `python -m schemas.export`"
        assert committed.read_text() == text, f"{committed} is stale: run `python -m schemas.export`"


def test_a_conversation_maps_to_one_partition_on_every_topic_of_equal_width() -> None:
    from schemas.topics import CONTROL, INFERENCE_REQUESTS, TOKENS, partition_for

    ids = [new_id() for _ in range(200)]
    partitions = {partition_for(i, TOKENS) for i in ids}
    assert partitions == set(range(TOKENS.partitions)), "ids should spread over every partition"
    for conversation_id in ids:
        assert partition_for(conversation_id, TOKENS) == partition_for(conversation_id, INFERENCE_REQUESTS)
        assert partition_for(conversation_id, TOKENS) == partition_for(conversation_id, CONTROL)
