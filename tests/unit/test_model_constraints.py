"""The local models' stop texts and JSON constraints (infra/models/_common/constraints.py)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from infra.models._common.constraints import cut_at_stop, guided_json, instance, stops

TOKENS = ["Hello ", "there, ", "friend."]


@pytest.mark.parametrize(
    ("stop", "kept"),
    [
        (["there"], ["Hello "]),
        (["lo th"], ["Hel"]),  # spans two tokens: cut inside the first
        (["friend", "Hello"], []),  # the earliest wins, whatever the list's order
        (["absent"], TOKENS),
        (["friend.!"], TOKENS),  # never completed: not a stop
    ],
)
def test_the_reply_ends_before_the_earliest_stop_text(stop: list[str], kept: list[str]) -> None:
    assert cut_at_stop(TOKENS, stop) == kept


def test_stop_is_a_text_or_a_list_and_empty_texts_are_ignored() -> None:
    assert stops({"stop": "\n"}) == ["\n"]
    assert stops({"stop": ["a", ""]}) == ["a"]
    assert stops({}) == []
    with pytest.raises(ValueError, match="'stop' must be a string or a list of strings"):
        stops({"stop": [1]})


class Address(BaseModel):
    street: str
    number: int


class Person(BaseModel):
    name: str
    age: int
    nicknames: list[str]
    home: Address
    spouse: Address | None = None


@pytest.mark.parametrize(
    "schema",
    [
        Person.model_json_schema(),
        {"type": "object", "properties": {"n": {"type": "number", "exclusiveMinimum": 2}, "b": {"type": "boolean"}}},
        {"type": "object", "properties": {"kind": {"enum": ["x", "y"]}, "tag": {"const": 7}}},
        {"type": "object", "properties": {"short": {"type": "string", "maxLength": 3, "minLength": 2}}},
    ],
)
def test_a_guided_reply_validates_against_its_schema(schema: dict[str, Any]) -> None:
    document = instance(schema, "hello")
    jsonschema.validate(document, schema)


def test_strings_of_a_guided_reply_are_the_message() -> None:
    assert instance(Person.model_json_schema(), "Ann")["name"] == "Ann"


def test_guided_decoding_names_a_schema_or_any_object() -> None:
    assert guided_json({"guided_decoding": {"json": {"type": "array"}}}) == {"type": "array"}
    assert guided_json({"guided_decoding": {"json": '{"type": "array"}'}}) == {"type": "array"}
    assert guided_json({"guided_decoding": {"json_object": True}}) == {"type": "object"}
    assert guided_json({}) is None
    with pytest.raises(ValueError, match="guided_decoding supports"):
        guided_json({"guided_decoding": {"regex": "a+"}})
