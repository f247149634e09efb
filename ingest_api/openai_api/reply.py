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
from schemas.events import ResponseEnded, ResponseRestarted, Usage

DIVERGED = "the reply was regenerated after a failure and differs from the text already sent: ask again"
# A request the API ends before its reply's end: it is shutting down (`TokenFeed.close_streams`).
SHUTTING_DOWN = "the API instance serving this request is shutting down (a deploy); the reply was stopped: ask again"
SHUTTING_DOWN_CODE = "server_shutting_down"


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


class ReplyFold:
    """A reply's events, in log order, folded one at a time into what the client is sent.

    A token is read from its routing fields (`LoggedEvent.token`), never decoded into a model:
    it is the one event a reply has many of."""

    def __init__(self) -> None:
        self._sent = SentText()

    def next(self, item: LoggedEvent) -> Delta | Ending | None:
        """The delta or the ending `item` makes; None when it sends the client nothing."""
        try:
            if item.token is not None:
                new = self._sent.add(item.token[1])
                return Delta(new) if new else None
            event = item.event
            if isinstance(event, ResponseRestarted):
                self._sent.restart()
            elif isinstance(event, ResponseEnded):
                if event.outcome == "completed":
                    self._sent.finish()
                return Ending(event.outcome, event.finish_reason, event.detail, event.usage, self._sent.text)
        except Diverged as exc:
            return Ending("failed", "", str(exc), None, self._sent.text)
        return None


async def reply(events: AsyncIterator[LoggedEvent]) -> AsyncIterator[Delta | Ending]:
    """Deltas (never empty) and then exactly one Ending."""
    fold = ReplyFold()
    async for item in events:
        if (sent := fold.next(item)) is not None:
            yield sent
            if isinstance(sent, Ending):
                return


async def reply_batches(batches: AsyncIterator[list[LoggedEvent]]) -> AsyncIterator[list[Delta | Ending]]:
    """`reply`, in the batches the events arrive in (each burst of tokens, for one socket write);
    no batch is empty, and the one with the Ending is the last."""
    fold = ReplyFold()
    async for batch in batches:
        sent: list[Delta | Ending] = []
        for item in batch:
            if (one := fold.next(item)) is not None:
                sent.append(one)
                if isinstance(one, Ending):
                    yield sent
                    return
        if sent:
            yield sent
