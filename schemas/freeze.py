"""Freeze the event contract: a sample and the schema of every event type at its current version.

`python -m schemas.freeze` writes, under `tests/fixtures/events/<Type>/`:

- `v<N>.json`, a sample event of version N, only if there is none: a sample is what version N
  looked like when it was frozen, and stays as it is for as long as the log may hold such events;
- `v<N>.schema.json`, the shape of version N (its JSON Schema less descriptions and titles), which
  a unit test compares with today's class to catch a change made without a decision.

It refuses, and writes nothing, while any frozen sample no longer decodes: then the change is
breaking, and the event needs a new `schema_version` and an upcaster rather than a re-freeze.
Run it from a source checkout, with the test extras installed (`pip install -e '.[test]'`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from polyfactory.factories.pydantic_factory import ModelFactory
from pydantic import BaseModel

from schemas.events import event_classes
from schemas.serde import UndecodableEvent, decode
from schemas.upcasting import current_version

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "events"
DOCUMENTATION_KEYS = frozenset({"description", "title"})
SAMPLE_SEED = 1  # samples are built reproducibly; an existing one is never rebuilt


def shape(cls: type[BaseModel]) -> dict[str, Any]:
    """`cls`'s JSON Schema without its prose: rewording a docstring is not a contract change."""
    schema: dict[str, Any] = _without_documentation(cls.model_json_schema())
    return schema


def shape_text(cls: type[BaseModel]) -> str:
    return json.dumps(shape(cls), indent=2, sort_keys=True) + "\n"


def sample_path(cls: type[BaseModel], version: int) -> Path:
    return FIXTURES / cls.__name__ / f"v{version}.json"


def shape_path(cls: type[BaseModel], version: int) -> Path:
    return FIXTURES / cls.__name__ / f"v{version}.schema.json"


def frozen_samples(cls: type[BaseModel]) -> list[Path]:
    return sorted((FIXTURES / cls.__name__).glob("v*[0-9].json"))


def build_sample(cls: type[BaseModel]) -> str:
    """A sample of `cls` with every field set, optional ones included, as pretty-printed JSON."""
    factory = ModelFactory.create_factory(cls, __random_seed__=SAMPLE_SEED)
    return json.dumps(json.loads(factory.build().model_dump_json()), indent=2, ensure_ascii=False) + "\n"


def unreadable_samples(cls: type[BaseModel]) -> list[str]:
    """Why each frozen sample of `cls` that today's decoder cannot read fails."""
    problems = []
    for path in frozen_samples(cls):
        try:
            decode(path.read_bytes())
        except UndecodableEvent as exc:
            problems.append(f"{path.relative_to(FIXTURES)}: {exc}")
    return problems


def freeze(cls: type[BaseModel]) -> list[Path]:
    """Write `cls`'s missing sample and its current shape; the files that changed."""
    version = current_version(cls)
    written = []
    sample = sample_path(cls, version)
    if not sample.exists():
        sample.parent.mkdir(parents=True, exist_ok=True)
        sample.write_text(build_sample(cls))
        written.append(sample)
    frozen_shape = shape_path(cls, version)
    text = shape_text(cls)
    if not frozen_shape.exists() or frozen_shape.read_text() != text:
        frozen_shape.write_text(text)
        written.append(frozen_shape)
    return written


def main() -> None:
    problems = [problem for cls in event_classes() for problem in unreadable_samples(cls)]
    if problems:
        print("refusing to freeze: today's code cannot read these frozen samples:", file=sys.stderr)
        print("\n".join(f"  {problem}" for problem in problems), file=sys.stderr)
        print(
            "that change is breaking: bump the event's schema_version and add an upcaster "
            "(`upcast_v<N>_v<N+1>`, see schemas/upcasting.py), then run this again",
            file=sys.stderr,
        )
        sys.exit(1)
    written = [path for cls in event_classes() for path in freeze(cls)]
    for path in written:
        print(f"wrote {path.relative_to(FIXTURES.parents[2])}", file=sys.stderr)
    print(f"event contract frozen: {len(written)} file(s) changed under {FIXTURES}", file=sys.stderr)


def _without_documentation(node: Any) -> Any:
    """`node` with every string-valued description/title removed (a field may be named `title`)."""
    if isinstance(node, dict):
        return {
            key: _without_documentation(value)
            for key, value in node.items()
            if not (key in DOCUMENTATION_KEYS and isinstance(value, str))
        }
    if isinstance(node, list):
        return [_without_documentation(item) for item in node]
    return node


if __name__ == "__main__":
    main()
