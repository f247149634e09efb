"""The public contract as outsiders read it: the README's tables and the exported JSON Schema files."""

from __future__ import annotations

import json

import jsonschema
import pytest

from schemas import contract_doc, export, topics
from schemas.events import DeadLetter, Event, ResponseStarted, TokenGenerated, event_classes
from schemas.freeze import sample_path
from schemas.serde import encode, event_type
from schemas.upcasting import current_version


def _exported(cls: type[Event | DeadLetter]) -> dict[str, object]:
    schema: dict[str, object] = json.loads((export.OUT_DIR / f"{cls.__name__}.json").read_text())
    return schema


def test_the_readme_tables_are_current() -> None:
    readme = contract_doc.README.read_text()
    stale = "the README's event contract tables are stale: run `python -m schemas.export`"
    assert contract_doc.updated(readme) == readme, stale


def test_a_readme_without_a_table_s_markers_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match=r"README\.md lacks the markers .*topics table"):
        contract_doc.updated("# a README with no tables\n")


@pytest.mark.parametrize("cls", event_classes(), ids=lambda cls: cls.__name__)
def test_every_event_is_on_exactly_one_topic(cls: type[Event | DeadLetter]) -> None:
    holders = [topic.name for topic in topics.ALL if cls in topic.holds]
    assert len(holders) == 1, f"{cls.__name__} is on {holders}: list it in the `holds` of its topic (schemas/topics.py)"


@pytest.mark.parametrize("cls", event_classes(), ids=lambda cls: cls.__name__)
def test_an_analysts_validator_accepts_what_steno_writes(cls: type[Event | DeadLetter]) -> None:
    sample = json.loads(sample_path(cls, current_version(cls)).read_text())
    jsonschema.validate(json.loads(encode(cls.model_validate(sample))), _exported(cls))


def test_an_analysts_validator_tells_event_types_apart() -> None:
    token = TokenGenerated(conversation_id="c", user_id="u", response_id="r", seq=0, text="hi")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(encode(token)), _exported(ResponseStarted))


@pytest.mark.parametrize("cls", event_classes(), ids=lambda cls: cls.__name__)
def test_event_type_reads_the_type_of_every_event(cls: type[Event | DeadLetter]) -> None:
    sample = cls.model_validate_json(sample_path(cls, current_version(cls)).read_text())
    assert event_type(encode(sample)) == cls.model_fields["type"].default


@pytest.mark.parametrize("raw", [None, b"", b"not json", b"[1]", b'{"type": "NoSuchEvent"}', b'{"type": 3}'])
def test_event_type_is_none_for_what_is_no_known_event(raw: bytes | None) -> None:
    assert event_type(raw) is None
