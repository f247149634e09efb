"""Upcasting: older versions are upgraded step by step as they are decoded; unknown ones are refused."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from schemas.events import MessageAccepted, TokenGenerated
from schemas.serde import UndecodableEvent, decode, encode
from schemas.upcasting import UnreadableVersion, current_version, upcast


class Renamed(BaseModel):
    """A model with a history (v1 `text`, v2 `content`, v3 adds `language`), to exercise the mechanism."""

    schema_version: Literal[3] = 3
    content: str
    language: str

    @staticmethod
    def upcast_v1_v2(data: dict[str, Any]) -> dict[str, Any]:
        data = dict(data)
        data["content"] = data.pop("text")
        return data

    @staticmethod
    def upcast_v2_v3(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "language": "und"}


class Gap(BaseModel):
    """Version 2 with no upcaster from version 1: a history that was not written down."""

    schema_version: Literal[2] = 2


def test_the_current_version_is_the_one_the_class_declares() -> None:
    assert current_version(Renamed) == 3


def test_an_old_version_is_upcast_through_every_step_in_order() -> None:
    assert upcast({"schema_version": 1, "text": "hi"}, Renamed) == {
        "schema_version": 3,
        "content": "hi",
        "language": "und",
    }


def test_a_middle_version_takes_only_the_steps_after_it() -> None:
    upgraded = upcast({"schema_version": 2, "content": "hi", "language": "ignored"}, Renamed)
    assert upgraded == {"schema_version": 3, "content": "hi", "language": "und"}


def test_the_current_version_is_left_as_it_is() -> None:
    data = {"schema_version": 3, "content": "hi", "language": "fr"}
    assert upcast(data, Renamed) is data


def test_an_event_without_a_version_is_version_1() -> None:
    assert upcast({"text": "hi"}, Renamed)["content"] == "hi"


def test_upcasting_leaves_the_event_as_read_untouched() -> None:
    data = {"schema_version": 1, "text": "hi"}
    upcast(data, Renamed)
    assert data == {"schema_version": 1, "text": "hi"}


def test_a_newer_version_than_the_reader_knows_is_refused_clearly() -> None:
    with pytest.raises(UnreadableVersion, match="Renamed schema_version 4 is newer than this reader knows"):
        upcast({"schema_version": 4}, Renamed)


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, None, True])
def test_a_version_that_is_not_a_positive_integer_is_refused(version: object) -> None:
    with pytest.raises(UnreadableVersion, match="must be an integer from 1 to 3"):
        upcast({"schema_version": version}, Renamed)


def test_a_missing_upcaster_is_named() -> None:
    with pytest.raises(UnreadableVersion, match="Gap has no upcast_v1_v2"):
        upcast({"schema_version": 1}, Gap)


def test_decode_refuses_a_future_version_of_a_real_event_as_a_poison_pill() -> None:
    future = json.loads(encode(TokenGenerated(conversation_id="c", user_id="u", response_id="r", seq=1, text="x")))
    future["schema_version"] = current_version(TokenGenerated) + 1
    with pytest.raises(UndecodableEvent, match=f"TokenGenerated schema_version {future['schema_version']} is newer"):
        decode(json.dumps(future).encode())


def test_decode_reads_an_event_written_before_schema_version_existed_as_version_1() -> None:
    old = json.loads(encode(TokenGenerated(conversation_id="c", user_id="u", response_id="r", seq=1, text="x")))
    del old["schema_version"]
    assert decode(json.dumps(old).encode()) == TokenGenerated.model_validate(old)


def test_message_accepted_v1_keeps_content_and_offset_where_it_had_them() -> None:
    """Version 1 MessageAccepted events were written both without and (later) with the two fields."""
    ids: dict[str, Any] = {"conversation_id": "c", "user_id": "u", "message_id": "m", "response_id": "r"}
    accepted = MessageAccepted(**ids, model="scripted", content="hi", submitted_offset=7)
    v1 = {**json.loads(encode(accepted)), "schema_version": 1}
    assert decode(json.dumps(v1).encode()) == accepted


def test_message_accepted_v1_without_them_reads_as_unknown() -> None:
    ids: dict[str, Any] = {"conversation_id": "c", "user_id": "u", "message_id": "m", "response_id": "r"}
    v1 = {"type": "MessageAccepted", "schema_version": 1, **ids, "model": "scripted"}
    accepted = decode(json.dumps(v1).encode())
    assert isinstance(accepted, MessageAccepted)
    assert (accepted.content, accepted.submitted_offset, accepted.schema_version) == ("", -1, 2)
