"""A model's stream started before anyone reads it, so the model works while the bridge does not.

A generation numbers its attempt in Redis before it may write anything (`attempts.begin`), a
round trip of ~0.3-0.8 ms on the first token's path; the model's own first token takes longer.
Opening the stream first and numbering the attempt meanwhile takes the round trip off that path.
Nothing is written to the log until the attempt is numbered, so starting early changes only
what the model is asked to do: a stream the generation then does not read (the reply was
written already, or its attempts are used up) is cancelled, and Triton stops generating.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator


class EarlyStream:
    """An async iterator over `pieces` whose first piece is being fetched already, in a task."""

    def __init__(self, pieces: AsyncGenerator[str, None]) -> None:
        self._pieces = pieces
        self._first: asyncio.Task[str] | None = asyncio.ensure_future(_first_of(pieces))

    def __aiter__(self) -> EarlyStream:
        return self

    async def __anext__(self) -> str:
        if self._first is None:
            return await anext(self._pieces)
        first, self._first = self._first, None
        return await first  # the first piece, or the stream's end or error, as reading it would give

    async def aclose(self) -> None:
        """Cancel the stream: its first read, if still pending or never collected, then the rest."""
        if self._first is not None:
            first, self._first = self._first, None
            first.cancel()
            await asyncio.wait([first])  # its own cancellation or error is not the caller's
            if not first.cancelled():
                first.exception()  # collected: the stream's error is moot once the stream is not wanted
        await self._pieces.aclose()


async def _first_of(pieces: AsyncGenerator[str, None]) -> str:
    return await anext(pieces)
