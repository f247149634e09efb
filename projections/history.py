"""The history view: conversations and their turns in Cassandra, built from the conversation log.

Write side: `History.apply(event)`. Every write is an upsert keyed by ids the event carries, and
its Cassandra write timestamp comes from the event (`write_time`), never from the clock.
Cassandra keeps, per cell, the value with the highest write timestamp, so the view is a function
of the set of events applied, whatever their order or repetition: a redelivered event changes
nothing, and a replay running beside the live runner cannot roll a finished reply back to
`pending`.

Deleting a conversation writes its tombstones at the highest timestamp there is (`FOREVER`):
no write about it, earlier or later (a replay, a rename racing the delete, a message sent through
another API process that still thought it existed), can bring any of its rows back.

Read side: the queries the API answers history and ownership requests with.

The tables are created by `infra/migrations/002_history.cql`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import Session
from cassandra.query import BatchStatement, BatchType, Statement

from infra import cassandra, cql
from infra.settings import settings
from infra.store_errors import CASSANDRA_UNAVAILABLE
from projections import write_plan
from projections.status import Status
from schemas.events import (
    ConversationDeleted,
    ConversationRenamed,
    ConversationStarted,
    Event,
    MessageAccepted,
    MessageBlocked,
    MessageSubmitted,
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    id_created_ms,
)

TABLES = ("conversations", "conversations_by_user", "messages_by_conversation", "responses")

MessageEvent = (
    MessageSubmitted | MessageAccepted | MessageBlocked | ResponseCompleted | ResponseFailed | ResponseCancelled
)

# A message's events in lifecycle order; a later stage's writes win over an earlier one's.
STAGES: dict[type[MessageEvent], int] = {
    MessageSubmitted: 0,
    MessageAccepted: 1,
    MessageBlocked: 2,
    ResponseCompleted: 3,
    ResponseFailed: 3,
    ResponseCancelled: 3,
}
REPLACED_STAGE = 999  # a regeneration retires the old reply after every stage and attempt of its own events
FOREVER = 2**63 - 1  # Cassandra's highest write timestamp: a deletion nothing can outlive

Cells = dict[str, Any]
ROW_BYTES = 256  # what a row weighs in a batch beyond its text cells: keys, ids, timestamps, the other cells
OUTCOME: Cells = {"content": "", "finish_reason": None, "detail": None}
"""The outcome cells a reply's final event does not set itself: it clears them, so that the final
event of a later attempt replaces an earlier attempt's outcome whole (see `write_time`)."""


@dataclass
class Written:
    """What a batch wrote: rows, and the events that could not be written, by their position."""

    rows: int = 0
    failures: dict[int, Exception] = field(default_factory=dict)


@dataclass
class Writes:
    """One event's statements: rows, which go in its segment's one unlogged batch (see
    `projections.write_plan`), and statements that must run one after another (a deletion's)."""

    rows: list[Statement] = field(default_factory=list)
    in_order: list[Statement] = field(default_factory=list)

    def all(self) -> list[Statement]:
        return [*self.rows, *self.in_order]


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    user_id: str
    title: str
    created_at: datetime


@dataclass(frozen=True)
class Message:
    """One turn: the user's message (row id = message_id) or the reply (row id = response_id)."""

    conversation_id: str
    message_id: str
    role: str
    content: str
    status: Status
    model: str
    reply_to: str | None  # on a reply: the message_id it answers
    finish_reason: str | None
    detail: str | None  # why a reply failed or was blocked
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Response:
    """Where a response id belongs: enough to check its owner and find its turn."""

    response_id: str
    conversation_id: str
    user_id: str
    message_id: str


def connect() -> Session:
    """A session on steno's keyspace; close it with `session.cluster.shutdown()`."""
    _, session = cassandra.connect(keyspace=settings.cassandra.keyspace)
    return session


def write_time(event: ConversationStarted | ConversationRenamed | MessageEvent) -> int:
    """The Cassandra write timestamp (microseconds) of the event's writes.

    A message's events are stamped with the message_id's UUIDv7 time plus their lifecycle stage,
    so a later stage always wins even when the clocks of the machines that produced the events
    (API, moderation, bridge) disagree. The final events of a reply add their attempt: two attempts
    can both end it (the bridge that ran the first froze and came back), and on equal timestamps
    Cassandra would keep each cell's larger value, mixing the two outcomes in one row; the later
    attempt wins instead. A conversation is started once, and renamed by one user from one API:
    their own time will do.
    """
    if isinstance(event, ConversationStarted | ConversationRenamed):
        return int(event.occurred_at.timestamp() * 1_000_000)
    stage = STAGES[type(event)]
    if isinstance(event, ResponseCompleted | ResponseFailed | ResponseCancelled):
        stage += min(event.attempt, REPLACED_STAGE - stage) - 1
    return _created_ms(event.message_id) * 1000 + stage


def replaced_time(event: MessageSubmitted) -> int:
    """When a regeneration marks the reply it replaces: after any event of that reply, which
    answers the same message_id and so is stamped from the same time."""
    return _created_ms(event.message_id) * 1000 + REPLACED_STAGE


def _created_ms(id_: str) -> int:
    created = id_created_ms(id_)
    if created is None:
        raise ValueError(f"{id_!r} is not a steno id (UUIDv7)")
    return created


def turn_cells(event: MessageEvent) -> dict[str, Cells]:
    """Row id -> the cells of `messages_by_conversation` the event sets on that turn."""
    match event:
        case MessageSubmitted():
            created = {"model": event.model, "created_at": event.occurred_at}
            user = {"role": "user", "content": event.content, "status": Status.PENDING}
            reply = {"role": "assistant", "content": "", "status": Status.PENDING, "reply_to": event.message_id}
            if event.replaces is not None:  # a regeneration: the user's row is there already
                return {event.response_id: reply | created}
            return {event.message_id: user | created, event.response_id: reply | created}
        case MessageAccepted():
            return {event.message_id: {"status": Status.ACCEPTED}}
        case MessageBlocked():
            reply = {"status": Status.BLOCKED, "content": event.reason, "detail": ", ".join(event.categories)}
            return {event.message_id: {"status": Status.BLOCKED}, event.response_id: reply}
        case ResponseCompleted():
            reply = {"status": Status.COMPLETED, "content": event.text, "finish_reason": event.finish_reason}
            return {event.response_id: OUTCOME | reply}
        case ResponseFailed():
            return {event.response_id: OUTCOME | {"status": Status.FAILED, "detail": event.error}}
        case ResponseCancelled():
            return {event.response_id: OUTCOME | {"status": Status.CANCELLED, "content": event.text}}


def batch_bytes(event: Event) -> int:
    """Roughly what the event's rows add to a batch, which Cassandra sizes by its data: the text
    each row sets (a message, a reply), and ROW_BYTES a row for the rest."""
    if not isinstance(event, MessageEvent):
        return 2 * ROW_BYTES  # a conversation's rows, a title: small
    return sum(
        ROW_BYTES + sum(len(value.encode()) for value in cells.values() if isinstance(value, str))
        for cells in turn_cells(event).values()
    )


class History:
    """The history view over one Cassandra session (whose keyspace holds the tables)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        prepare = session.prepare
        self._upsert_turn = prepare(
            "UPDATE messages_by_conversation USING TIMESTAMP :write_time"
            " SET role = :role, content = :content, status = :status, model = :model,"
            " reply_to = :reply_to, finish_reason = :finish_reason, detail = :detail,"
            " created_at = :created_at, updated_at = :updated_at"
            " WHERE conversation_id = :conversation_id AND message_id = :message_id"
        )
        self._insert_conversation = prepare(
            "INSERT INTO conversations (conversation_id, user_id, title, created_at)"
            " VALUES (?, ?, ?, ?) USING TIMESTAMP ?"
        )
        self._insert_by_user = prepare(
            "INSERT INTO conversations_by_user (user_id, conversation_id, title, created_at)"
            " VALUES (?, ?, ?, ?) USING TIMESTAMP ?"
        )
        self._insert_response = prepare(
            "INSERT INTO responses (response_id, conversation_id, user_id, message_id)"
            " VALUES (?, ?, ?, ?) USING TIMESTAMP ?"
        )
        self._rename = prepare("UPDATE conversations USING TIMESTAMP ? SET title = ? WHERE conversation_id = ?")
        self._rename_by_user = prepare(
            "UPDATE conversations_by_user USING TIMESTAMP ? SET title = ? WHERE user_id = ? AND conversation_id = ?"
        )
        self._delete_response = prepare(f"DELETE FROM responses USING TIMESTAMP {FOREVER} WHERE response_id = ?")
        self._delete_turns = prepare(
            f"DELETE FROM messages_by_conversation USING TIMESTAMP {FOREVER} WHERE conversation_id = ?"
        )
        self._delete_by_user = prepare(
            f"DELETE FROM conversations_by_user USING TIMESTAMP {FOREVER} WHERE user_id = ? AND conversation_id = ?"
        )
        self._delete_conversation = prepare(
            f"DELETE FROM conversations USING TIMESTAMP {FOREVER} WHERE conversation_id = ?"
        )
        self._select_owner = prepare("SELECT user_id FROM conversations WHERE conversation_id = ?")
        self._select_conversations = prepare(
            "SELECT conversation_id, user_id, title, created_at FROM conversations_by_user WHERE user_id = ? LIMIT ?"
        )
        self._select_messages = prepare(
            "SELECT conversation_id, message_id, role, content, status, model, reply_to,"
            " finish_reason, detail, created_at, updated_at"
            " FROM messages_by_conversation WHERE conversation_id = ?"
        )
        self._select_response = prepare(
            "SELECT response_id, conversation_id, user_id, message_id FROM responses WHERE response_id = ?"
        )

    def close(self) -> None:
        """Close the session (blocking: run it off the event loop)."""
        self._session.shutdown()

    # --- write side ---------------------------------------------------------------------

    async def apply(self, event: Event) -> None:
        """Upsert what the event says; events this view does not keep are ignored."""
        for failure in (await self.apply_all([event])).failures.values():
            raise failure

    async def apply_all(self, events: Sequence[Event]) -> Written:
        """Apply a batch: each conversation's events in log order, different conversations' at
        once, a run of one conversation's turn rows in one batch (see `projections.write_plan`),
        with `settings.projections.write_concurrency` writes in flight.

        An event that cannot be written is reported in `failures` (with the events of its
        conversation's batch, which Cassandra refused as a whole) and the others go on; if
        Cassandra cannot be reached, one of CASSANDRA_UNAVAILABLE is raised instead, and the
        batch can be applied again.
        """
        written = Written()
        for step in write_plan.steps(events, batch_bytes):
            await self._apply_step(events, step, written)
            for failure in written.failures.values():
                if isinstance(failure, CASSANDRA_UNAVAILABLE):
                    raise failure
        return written

    async def _apply_step(self, events: Sequence[Event], step: list[write_plan.Segment], written: Written) -> None:
        """Write one segment of each of several conversations: a deletion's statements one by one,
        in their order (see `_deletion`), all the others at once."""
        concurrent: list[tuple[list[int], Statement]] = []  # the events each statement writes
        in_order: list[tuple[int, list[Statement]]] = []
        for segment in step:
            planned = await self._planned(events, segment, written)
            rows = BatchStatement(batch_type=BatchType.UNLOGGED)
            for _, writes in planned:
                for statement in writes.rows:
                    rows.add(statement)
            if len(rows):
                concurrent.append(([i for i, writes in planned if writes.rows], rows))
            in_order += [(i, writes.in_order) for i, writes in planned if writes.in_order]
        results = await self._execute_concurrently([statement for _, statement in concurrent])
        for (positions, statement), (success, result) in zip(concurrent, results, strict=True):
            _count(written, positions, statement, None if success else result)
        for i, statements in in_order:
            for statement in statements:
                try:
                    await self._execute(statement)
                except Exception as exc:
                    _count(written, [i], statement, exc)
                    break
                _count(written, [i], statement, None)

    async def _planned(
        self, events: Sequence[Event], segment: write_plan.Segment, written: Written
    ) -> list[tuple[int, Writes]]:
        """Each event's writes; an event whose writes cannot be made is a failure of its own."""
        planned = []
        for i in segment:
            try:
                planned.append((i, await self.writes(events[i])))
            except ValueError as exc:  # the event's own fault, e.g. an id that is no steno id
                written.failures[i] = exc
        return planned

    async def _execute_concurrently(self, statements: list[Statement]) -> list[cql.Outcome]:
        """Run the statements with bounded concurrency: (success, result or exception) each."""
        return await cql.each(self._session, statements, settings.projections.write_concurrency)

    async def writes(self, event: Event) -> Writes:
        """The statements that apply the event (a deletion reads which response ids to delete)."""
        if isinstance(event, ConversationStarted):
            return Writes(rows=self._conversation_rows(event))
        if isinstance(event, ConversationRenamed):
            return Writes(rows=self._title_rows(event))
        if isinstance(event, ConversationDeleted):
            return Writes(in_order=await self._deletion(event))
        if isinstance(event, MessageSubmitted):
            return Writes(rows=[*self._turn_rows(event), *self._replaced_row(event), self._response_row(event)])
        if isinstance(event, MessageEvent):
            return Writes(rows=self._turn_rows(event))
        return Writes()

    def _conversation_rows(self, event: ConversationStarted) -> list[Statement]:
        row = (event.title, event.occurred_at, write_time(event))
        return [
            self._insert_conversation.bind((event.conversation_id, event.user_id, *row)),
            self._insert_by_user.bind((event.user_id, event.conversation_id, *row)),
        ]

    def _title_rows(self, event: ConversationRenamed) -> list[Statement]:
        stamp, title = write_time(event), event.title
        return [
            self._rename.bind((stamp, title, event.conversation_id)),
            self._rename_by_user.bind((stamp, title, event.user_id, event.conversation_id)),
        ]

    async def _deletion(self, event: ConversationDeleted) -> list[Statement]:
        """Tombstones for every row of the conversation, its response ids first: they are found
        through its turns, so a redelivery after a crash midway still finds those not yet deleted."""
        replies = [row.message_id for row in await self._turn_rows_of(event.conversation_id) if row.reply_to]
        return [
            *(self._delete_response.bind((response_id,)) for response_id in replies),
            self._delete_turns.bind((event.conversation_id,)),
            self._delete_by_user.bind((event.user_id, event.conversation_id)),
            self._delete_conversation.bind((event.conversation_id,)),
        ]

    def _replaced_row(self, event: MessageSubmitted) -> list[Statement]:
        """A regeneration marks the reply it replaces; the row stays, so a deletion finds its id."""
        if event.replaces is None:
            return []
        cells = {"status": Status.REPLACED, "updated_at": event.occurred_at, "write_time": replaced_time(event)}
        key = {"conversation_id": event.conversation_id, "message_id": event.replaces}
        return [self._upsert_turn.bind(cells | key)]

    def _turn_rows(self, event: MessageEvent) -> list[Statement]:
        stamp = {"write_time": write_time(event), "updated_at": event.occurred_at}
        return [
            self._upsert_turn.bind(cells | {"conversation_id": event.conversation_id, "message_id": row_id} | stamp)
            for row_id, cells in turn_cells(event).items()
        ]

    def _response_row(self, event: MessageSubmitted) -> Statement:
        ids = (event.response_id, event.conversation_id, event.user_id, event.message_id)
        return self._insert_response.bind((*ids, write_time(event)))

    async def truncate(self) -> None:
        """Empty every table of this view, so a replay rebuilds it from nothing."""
        for table in TABLES:
            await self._execute(f"TRUNCATE {table}")

    # --- read side ----------------------------------------------------------------------

    async def conversation_owner(self, conversation_id: str) -> str | None:
        rows = await self._execute(self._select_owner.bind((conversation_id,)))
        return rows[0].user_id if rows else None

    async def conversations(self, user_id: str, limit: int = 50) -> list[Conversation]:
        """The user's conversations, newest first."""
        rows = await self._execute(self._select_conversations.bind((user_id, limit)))
        return [Conversation(r.conversation_id, r.user_id, r.title, _utc(r.created_at)) for r in rows]

    async def messages(self, conversation_id: str) -> list[Message]:
        """Every turn of the conversation, in order: each message followed by its reply (the
        latest one: replies the user regenerated are left out)."""
        rows = await self._turn_rows_of(conversation_id)
        return [_message(row) for row in rows if row.status != Status.REPLACED]

    async def _turn_rows_of(self, conversation_id: str) -> list[Any]:
        return await self._execute(self._select_messages.bind((conversation_id,)))

    async def response(self, response_id: str) -> Response | None:
        rows = await self._execute(self._select_response.bind((response_id,)))
        return Response(*rows[0]) if rows else None

    async def _execute(self, statement: Statement | str) -> list[Any]:
        """Run a statement without blocking the event loop; all pages are fetched before returning."""
        return await cql.rows(self._session, statement)


def rows_of(statement: Statement) -> int:
    """How many rows a statement writes: one, or one per statement of a batch."""
    return len(statement) if isinstance(statement, BatchStatement) else 1


def _count(written: Written, positions: list[int], statement: Statement, failure: Exception | None) -> None:
    """Record one statement's outcome: its rows, or a failure of each event it writes."""
    if failure is None:
        written.rows += rows_of(statement)
        return
    for i in positions:
        written.failures.setdefault(i, failure)


def _message(row: Any) -> Message:
    return Message(
        conversation_id=row.conversation_id,
        message_id=row.message_id,
        role=row.role,
        content=row.content,
        status=Status(row.status),
        model=row.model,
        reply_to=row.reply_to,
        finish_reason=row.finish_reason,
        detail=row.detail,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


def _utc(naive: datetime) -> datetime:
    """The driver returns timestamps as naive UTC datetimes."""
    return naive.replace(tzinfo=UTC)
