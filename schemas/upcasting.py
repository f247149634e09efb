"""Upcasting: an event written by an older steno, upgraded to today's shape as it is read.

The conversation log is kept forever, so today's readers meet every version of an event that was
ever written, and rewriting history is not an option. Instead each event class declares its
current version (`schema_version: Literal[N] = N`) and, for every breaking change it went through,
a pure function from one version's dict to the next: a static method named `upcast_v1_v2`,
`upcast_v2_v3`, … (the naming convention of the `eventsourcing` library). The decoder applies them
in order before validation, so every reader only ever handles the current model. For example,
an event whose version 2 renamed `text` to `content`:

    class Example(Event):
        type: Literal["Example"] = "Example"
        schema_version: Literal[2] = 2
        content: str

        @staticmethod
        def upcast_v1_v2(data: dict[str, Any]) -> dict[str, Any]:
            data = dict(data)
            data["content"] = data.pop("text")
            return data

An upcaster never mutates its argument, and never needs to set `schema_version`: `upcast` does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UnreadableVersion(ValueError):
    """The event's version is one this code cannot turn into its current model."""


@functools.cache
def current_version(cls: type[BaseModel]) -> int:
    """The version `cls` declares: its `schema_version` default."""
    version = cls.model_fields["schema_version"].default
    assert isinstance(version, int), f"{cls.__name__}.schema_version needs an int default"
    return version


def upcast(data: dict[str, Any], cls: type[BaseModel]) -> dict[str, Any]:
    """`data` (an event of type `cls` as read, any version) in `cls`'s current shape.

    A missing `schema_version` is 1: events written before the field existed.
    """
    current = current_version(cls)
    version = data.get("schema_version", 1)
    if type(version) is not int or not 1 <= version <= current:
        raise UnreadableVersion(_unreadable(cls.__name__, version, current))
    while version < current:
        step: Upcaster | None = getattr(cls, f"upcast_v{version}_v{version + 1}", None)
        if step is None:
            raise UnreadableVersion(
                f"{cls.__name__} has no upcast_v{version}_v{version + 1}: it cannot read version {version}"
            )
        version += 1
        data = {**step(data), "schema_version": version}
    return data


def _unreadable(name: str, version: object, current: int) -> str:
    if type(version) is int and version > current:
        return (
            f"{name} schema_version {version} is newer than this reader knows ({current}): "
            "upgrade this consumer to the steno that wrote it (the event is kept raw in the dead letters)"
        )
    return f"{name} schema_version must be an integer from 1 to {current}, not {version!r}"
