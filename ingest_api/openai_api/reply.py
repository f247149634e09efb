"""A reply as an OpenAI client sees it: text deltas, then one ending.

OpenAI's streams cannot take text back, but steno's can (ResponseRestarted, after a bridge
crash). A restarted generation is usually the same text again (greedy decoding, the same
prompt), so the text already sent is matched against the new attempt and only what goes
beyond it is passed on; a new attempt that says something else ends the reply as failed
rather than hand the client a mix of two answers. The translation is a pure function of the
log, so a stream replayed from the log numbers its events the same way every time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from ingest_api.positions import LoggedEvent
from schemas.events import ResponseEnded, ResponseRestarted, TokenGenerated, Usage

DIVERGED = "the reply was regenerated after a failure and differs from the text already sent: ask again"


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Ending:
    outcome: str  # completed, cancelled, failed or blocked
    finish_reason: str
    detail: str
    usage: Usage | None
    text: str  # the whole reply


class Diverged(Exception):
    """A restarted attempt's text contradicts what the client already has."""


class SentText:
    """What the client has been sent, and where a restarted attempt stands against it."""

    def __init__(self) -> None:
        self.text = ""
        self._retry: str | None = None  # the restarted attempt's text while it repeats `text`

    def restart(self) -> None:
        self._retry = ""

    def add(self, piece: str) -> str:
        """The part of `piece` the client does not have yet."""
        if self._retry is None:
            self.text += piece
            return piece
        retry = self._retry + piece
        if len(retry) <= len(self.text):
            if not self.text.startswith(retry):
                raise Diverged(DIVERGED)
            self._retry = retry
            return ""
        if not retry.startswith(self.text):
            raise Diverged(DIVERGED)
        new, self.text, self._retry = retry[len(self.text) :], retry, None
        return new

    def finish(self) -> None:
        """The attempt ended: a restarted one must have said at least what the client has."""
        if self._retry is not None and self._retry != self.text:
            raise Diverged(DIVERGED)


async def reply(events: AsyncIterator[LoggedEvent]) -> AsyncIterator[Delta | Ending]:
    """Deltas (never empty) and then exactly one Ending."""
    sent = SentText()
    async for item in events:
        event = item.event
        try:
            if isinstance(event, TokenGenerated) and (new := sent.add(event.text)):
                yield Delta(new)
            elif isinstance(event, ResponseRestarted):
                sent.restart()
            elif isinstance(event, ResponseEnded) and event.outcome == "completed":
                sent.finish()
        except Diverged as exc:
            yield Ending("failed", "", str(exc), None, sent.text)
            return
        if isinstance(event, ResponseEnded):
            yield Ending(event.outcome, event.finish_reason, event.detail, event.usage, sent.text)
            return
