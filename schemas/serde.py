"""The one (de)serialiser for every steno event: UTF-8 JSON, discriminated by `type`.

Decoding upcasts older versions first (`schemas.upcasting`), so every reader gets today's model.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json, to_json

from schemas.events import AnyEvent, DeadLetter, Event, TokenGenerated, event_classes, new_id, utc_now
from schemas.upcasting import UnreadableVersion, upcast

_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
_CLASSES = {cls.model_fields["type"].default: cls for cls in event_classes()}


class UndecodableEvent(ValueError):
    """Bytes on a topic that are not a known steno event: a poison pill for the dead-letter topic."""


def encode(event: Event | DeadLetter) -> bytes:
    return event.model_dump_json().encode()


class TokenEncoder:
    """The TokenGenerated events of one response attempt, encoded to exactly the bytes `encode`
    writes for them, without a pydantic model per token.

    A reply's tokens are most of the events steno writes, and their fields are known good: the
    ids come from a validated InferenceRequested, `seq` and `text` from the bridge. Building and
    validating a model, then serialising it, cost ~4 µs a token; this ~1.2 µs: the fields every
    token of the attempt shares are encoded once, and `pydantic_core.to_json` (the serialiser
    pydantic itself uses) encodes the text and the time. A unit test holds the bytes equal to
    `encode` of the same event, so a field added to TokenGenerated fails it until added here.
    """

    _VERSION = TokenGenerated.model_fields["schema_version"].default

    def __init__(self, *, conversation_id: str, user_id: str, response_id: str, attempt: int) -> None:
        self._start = b'{"schema_version":%d,"event_id":"' % self._VERSION
        self._middle = b',"conversation_id":%s,"user_id":%s,"type":"TokenGenerated","response_id":%s,"seq":' % (
            to_json(conversation_id),
            to_json(user_id),
            to_json(response_id),
        )
        self._end = b',"attempt":%d}' % attempt

    def encode(self, seq: int, text: str, event_id: str | None = None, occurred_at: datetime | None = None) -> bytes:
        """The event's bytes; a new event id and the current time unless given."""
        return b"".join(
            (
                self._start,
                (event_id or new_id()).encode(),
                b'","occurred_at":',
                to_json(occurred_at or utc_now()),
                self._middle,
                b"%d" % seq,
                b',"text":',
                to_json(text),
                self._end,
            )
        )


def event_type(raw: bytes | None) -> str | None:
    """The `type` of a known steno event, read without validating the event: a reader that acts
    on one type skips the others for the cost of a JSON parse. None when the bytes are not a
    known event: `decode` says why."""
    try:
        data = from_json(raw) if raw is not None else None
    except ValueError:
        return None
    kind = data.get("type") if isinstance(data, dict) else None
    return kind if kind in _CLASSES else None


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
