"""Token-stream events with their log positions, which double as SSE ids (rule 5).

Every API process reads every record of the token stream, and a reply's tokens are most of them.
A token is read with orjson for the few fields that route and stream it (its response, `seq`,
`text`, `attempt`) and becomes a pydantic model only if something asks for `.event` (the OpenAI routes, or
never): building the model was the token feed's largest cost per token. Every other event, and
any record that is not a current-version TokenGenerated with those fields of the right types,
goes through the full `decode` (upcasting, validation, the reason it is refused).
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas.events import ResponseEnded, ResponseRestarted, ResponseStarted, TokenGenerated
from schemas.serde import UndecodableEvent, decode

TokenStreamEvent = ResponseStarted | TokenGenerated | ResponseRestarted | ResponseEnded

_TOKEN_VERSION = TokenGenerated.model_fields["schema_version"].default
_TOKEN_FIELDS = frozenset(TokenGenerated.model_fields)


class LoggedEvent:
    """One token-stream event at its offset in its partition of the token stream."""

    __slots__ = ("_event", "_raw", "attempt", "begins", "conversation_id", "ends", "offset", "response_id", "token")

    def __init__(self, offset: int, event: TokenStreamEvent) -> None:
        self.offset = offset
        self.response_id = event.response_id
        self.conversation_id = event.conversation_id
        self.attempt = event.attempt
        self.ends = isinstance(event, ResponseEnded)
        self.begins = isinstance(event, ResponseStarted) and event.attempt == 1  # nothing of it was written before
        self.token = (event.seq, event.text) if isinstance(event, TokenGenerated) else None
        self._event: TokenStreamEvent | None = event
        self._raw = b""

    @classmethod
    def _undecoded_token(cls, offset: int, raw: bytes, fields: dict[str, Any]) -> LoggedEvent:
        item = cls.__new__(cls)
        item.offset = offset
        item.response_id = fields["response_id"]
        item.conversation_id = fields["conversation_id"]
        item.attempt = fields.get("attempt", 1)
        item.ends = item.begins = False
        item.token = (fields["seq"], fields["text"])
        item._event = None
        item._raw = raw
        return item

    @property
    def event(self) -> TokenStreamEvent:
        """The pydantic model, decoded from the record on first use."""
        if self._event is None:
            event = decode(self._raw)
            if not isinstance(event, TokenGenerated):  # its type field said so: cannot happen
                raise UndecodableEvent(f"a {event.type} read as a TokenGenerated")
            self._event = event
        return self._event

    def kept(self) -> Kept:
        """The event as a memory of many events keeps it: a plain tuple, which the garbage
        collector stops tracking once it holds only bytes and an int (an undecoded token), so its
        full passes do not walk every remembered token. `from_kept` gives the event back."""
        return (self.offset, self._raw if self._event is None else self._event)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LoggedEvent) and (self.offset, self.event) == (other.offset, other.event)

    def __hash__(self) -> int:
        return hash((self.offset, self.response_id))

    def __repr__(self) -> str:
        return f"LoggedEvent({self.offset}, {self.event!r})"


Kept = tuple[int, bytes | TokenStreamEvent]


def from_kept(kept: Kept) -> LoggedEvent:
    """The LoggedEvent that `LoggedEvent.kept` made `kept` of."""
    offset, body = kept
    if isinstance(body, bytes):
        return LoggedEvent._undecoded_token(offset, body, orjson.loads(body))  # read this way once already
    return LoggedEvent(offset, body)


def logged(offset: int, raw: bytes | None, response_id: str | None = None) -> LoggedEvent | None:
    """The token-stream record at `offset`, or None if it belongs to another response than
    `response_id` (when given: a token of another response is then not decoded any further).

    Raises UndecodableEvent for bytes that are no steno event, or an event of another topic."""
    fields = _json_object(raw)
    if fields is not None and _is_current_token(fields):
        if response_id is not None and fields["response_id"] != response_id:
            return None
        return LoggedEvent._undecoded_token(offset, raw or b"", fields)
    event = decode(raw)
    if not isinstance(event, TokenStreamEvent):
        raise UndecodableEvent(f"a {event.type} does not belong on the token stream")
    if response_id is not None and event.response_id != response_id:
        return None
    return LoggedEvent(offset, event)


def _json_object(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        fields = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None  # `decode` says what is wrong with it
    return fields if isinstance(fields, dict) else None


def _is_current_token(fields: dict[str, Any]) -> bool:
    """A TokenGenerated of today's version, with the fields the feed and the SSE stream read and
    none it does not know (those are refused by `decode`, as always)."""
    return (
        fields.get("type") == "TokenGenerated"
        and fields.keys() <= _TOKEN_FIELDS
        and fields.get("schema_version") == _TOKEN_VERSION
        and type(fields.get("response_id")) is str
        and type(fields.get("conversation_id")) is str
        and type(fields.get("seq")) is int
        and type(fields.get("text")) is str
        and type(fields.get("attempt", 1)) is int
    )
