"""Schema evolution: today's code reads every frozen version of every event, and no event's schema
changes without a decision (a version bump with an upcaster, or a re-freeze of an additive change).
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from schemas.events import event_classes
from schemas.freeze import FIXTURES, sample_path, shape_path, shape_text
from schemas.serde import decode
from schemas.upcasting import current_version

EVENTS = event_classes()
SAMPLES = sorted(FIXTURES.glob("*/v*[0-9].json"))


def _name(cls: type[BaseModel]) -> str:
    return cls.__name__


def test_there_are_frozen_samples() -> None:
    assert len(SAMPLES) >= len(EVENTS), f"no samples under {FIXTURES}: run `python -m schemas.freeze`"


@pytest.mark.parametrize("cls", EVENTS, ids=_name)
def test_every_version_of_every_event_is_frozen(cls: type[BaseModel]) -> None:
    for version in range(1, current_version(cls) + 1):
        for path in (sample_path(cls, version), shape_path(cls, version)):
            assert path.exists(), f"{path} missing: run `python -m schemas.freeze`"


@pytest.mark.parametrize("path", SAMPLES, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_a_frozen_sample_decodes_to_todays_model(path: Path) -> None:
    event = decode(path.read_bytes())
    assert type(event).__name__ == path.parent.name
    assert event.schema_version == current_version(type(event))


@pytest.mark.parametrize("cls", EVENTS, ids=_name)
def test_an_event_schema_changes_only_with_a_decision(cls: type[BaseModel]) -> None:
    version = current_version(cls)
    frozen = shape_path(cls, version)
    assert frozen.exists(), f"{frozen} missing: run `python -m schemas.freeze`"
    diff = "\n".join(
        difflib.unified_diff(
            frozen.read_text().splitlines(), shape_text(cls).splitlines(), "frozen", "today", lineterm=""
        )
    )
    assert not diff, (
        f"{cls.__name__}'s JSON Schema changed since version {version} was frozen:\n{diff}\n"
        f"bump schema_version of {cls.__name__} to {version + 1} and add an upcaster "
        f"(`upcast_v{version}_v{version + 1}`) + frozen sample, or re-freeze with `python -m schemas.freeze` "
        "if the change is additive and backward compatible (a new field with a default)"
    )


@pytest.mark.parametrize("cls", EVENTS, ids=_name)
def test_every_event_declares_its_own_version(cls: type[BaseModel]) -> None:
    annotation = cls.model_fields["schema_version"].annotation
    declared = typing.get_origin(annotation) is typing.Literal and typing.get_args(annotation) == (
        current_version(cls),
    )
    assert declared, f"declare the version on the class: `schema_version: Literal[1] = 1` in {cls.__name__}"
