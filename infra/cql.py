"""CQL statements awaited on the event loop, over the driver's own asynchronous requests.

`asyncio.to_thread(session.execute, ...)` hands each request to a worker thread, which blocks
on a condition until the driver's I/O thread has the answer, then hands the result back to the
loop: two thread switches and a wait on the GIL for every statement (the GIL is handed over
every 5 ms at most, so under load a history write took 2-12 ms for a 0.6 ms Cassandra round
trip). Here the driver's I/O thread settles an asyncio future directly (`execute_async` with
callbacks), and concurrency is a semaphore on the loop instead of `execute_concurrent`'s thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from cassandra.cluster import ResponseFuture, Session
from cassandra.query import Statement

Outcome = tuple[bool, Any]  # (True, rows) or (False, the exception): execute_concurrent's shape


async def rows(session: Session, statement: Statement | str) -> list[Any]:
    """Every row the statement returns, all pages fetched (none for a write)."""
    loop = asyncio.get_running_loop()
    pages: asyncio.Queue[tuple[list[Any] | None, BaseException | None]] = asyncio.Queue()
    response: ResponseFuture = session.execute_async(statement)
    # The driver calls these once per page, on its I/O thread (or here, if it already answered).
    response.add_callbacks(
        callback=lambda page: loop.call_soon_threadsafe(pages.put_nowait, (page, None)),
        errback=lambda exc: loop.call_soon_threadsafe(pages.put_nowait, (None, exc)),
    )
    collected: list[Any] = []
    while True:
        page, error = await pages.get()
        if error is not None:
            raise error
        collected.extend(page or ())
        if not response.has_more_pages:
            return collected
        response.start_fetching_next_page()


async def each(session: Session, statements: Sequence[Statement], concurrency: int) -> list[Outcome]:
    """Run the statements with at most `concurrency` in flight; an outcome per statement, in order
    (a failure does not stop the others)."""
    slots = asyncio.Semaphore(concurrency)

    async def outcome(statement: Statement) -> Outcome:
        async with slots:
            try:
                return True, await rows(session, statement)
            except Exception as exc:
                return False, exc

    return list(await asyncio.gather(*(outcome(statement) for statement in statements)))
