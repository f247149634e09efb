"""The statuses a turn moves through, shared by the history and active-context views.

A user's message is `pending` until moderation decides: `accepted` or `blocked`.
The assistant's reply is `pending` until it ends: `completed`, `failed`, `cancelled`, or
`blocked` when the message it answers was blocked; `replaced` once the user regenerated it
(history keeps the row, so that a conversation's deletion still finds its response id, but no
reader shows it).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    BLOCKED = "blocked"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REPLACED = "replaced"


ENDED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.BLOCKED})
"""A reply's statuses once it has ended."""
