"""The one (de)serialiser for every steno event: UTF-8 JSON, discriminated by `type`.

Decoding upcasts older versions first (`schemas.upcasting`), so every reader gets today's model.
"""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

from schemas.events import AnyEvent, DeadLetter, Event, event_classes
from schemas.upcasting import UnreadableVersion, upcast

_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
_CLASSES = {cls.model_fields["type"].default: cls for cls in event_classes()}


class UndecodableEvent(ValueError):
    """Bytes on a topic that are not a known steno event: a poison pill for the dead-letter topic."""


def encode(event: Event | DeadLetter) -> bytes:
    return event.model_dump_json().encode()


def decode(raw: bytes | None) -> AnyEvent:
    if raw is None:
        raise UndecodableEvent("empty message (tombstone)")
    try:
        return _ADAPTER.validate_json(raw)  # today's version: one pass, as on every token
    except ValidationError:
        return _upcast_or_explain(raw)


def _upcast_or_explain(raw: bytes) -> AnyEvent:
    """An older version upgraded to today's model; anything else refused with the reason."""
    try:
        data = from_json(raw)
    except ValueError as exc:
        raise UndecodableEvent(f"not a steno event: not UTF-8 JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UndecodableEvent(f"not a steno event: a JSON {type(data).__name__}, not an object")
    cls = _CLASSES.get(data.get("type"))
    if cls is None:
        raise UndecodableEvent(f"not a steno event: unknown type {data.get('type')!r}; known: {sorted(_CLASSES)}")
    try:
        return _ADAPTER.validate_python(upcast(data, cls))
    except UnreadableVersion as exc:
        raise UndecodableEvent(str(exc)) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        problem = f"{exc.error_count()} error(s), first: {where}: {first['msg']}"
        raise UndecodableEvent(f"not a valid {cls.__name__}: {problem}") from exc
