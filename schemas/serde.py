"""The one (de)serialiser for every steno event: UTF-8 JSON, discriminated by `type`."""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError

from schemas.events import AnyEvent, DeadLetter, Event

_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


class UndecodableEvent(ValueError):
    """Bytes on a topic that are not a known steno event: a poison pill for the dead-letter topic."""


def encode(event: Event | DeadLetter) -> bytes:
    return event.model_dump_json().encode()


def decode(raw: bytes | None) -> AnyEvent:
    if raw is None:
        raise UndecodableEvent("empty message (tombstone)")
    try:
        return _ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise UndecodableEvent(f"not a steno event: {exc.error_count()} error(s): {exc.errors()[0]['msg']}") from exc
