"""Every event steno writes to Kafka, as pydantic models.

These classes are the contract between steno's components and with analytics consumers
(exported as JSON Schema by `python -m schemas.export`). Each event declares its current version
as `schema_version: Literal[N] = N`. A field added with a default keeps the version; any other
change bumps it and adds a static method `upcast_v{N-1}_v{N}` (dict → dict) that upgrades the
previous version as it is read (see `schemas.upcasting`, and the README's "The event contract").
"""

from __future__ import annotations

import json
import typing
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

import uuid_utils
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def new_id() -> str:
    """A unique, time-ordered id (UUIDv7): sorts by creation time, carries its timestamp."""
    return str(uuid_utils.uuid7())


def id_created_ms(event_id: str) -> int | None:
    """When a steno id was minted (UUIDv7 ids carry it in their top 48 bits); None if not one."""
    try:
        parsed = uuid.UUID(event_id)
    except ValueError:
        return None
    return parsed.int >> 80 if parsed.version == 7 else None


def utc_now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Fields every event carries, whatever its topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1  # each event narrows it to `Literal[its current version]`
    event_id: str = Field(default_factory=new_id)
    occurred_at: datetime = Field(default_factory=utc_now)
    conversation_id: str
    user_id: str


class ChatTurn(BaseModel):
    """One message of a prompt, in the chat-completions shape models are trained on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_tokens: int
    completion_tokens: int


# --- conversation log: the history, kept forever -------------------------------------------


class ConversationStarted(Event):
    type: Literal["ConversationStarted"] = "ConversationStarted"
    schema_version: Literal[1] = 1
    title: str = ""


class ConversationRenamed(Event):
    type: Literal["ConversationRenamed"] = "ConversationRenamed"
    schema_version: Literal[1] = 1
    title: str


class ConversationDeleted(Event):
    """The user deleted the conversation: every view forgets it, now and in every later replay."""

    type: Literal["ConversationDeleted"] = "ConversationDeleted"
    schema_version: Literal[1] = 1


def _as_json_text(value: typing.Any) -> typing.Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else value


class ResponseFormat(BaseModel):
    """The shape the reply must take: any JSON object, or a document valid against `json_schema`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["json_object", "json_schema"]
    # The JSON Schema, as JSON text (a flat column for analytics); an object is accepted and kept as text.
    json_schema: Annotated[str | None, BeforeValidator(_as_json_text)] = None


class SamplingOptions(BaseModel):
    """How a client asked for the reply to be generated (the OpenAI-compatible API's sampling fields).

    None leaves the model's own setting; `stop` ends the reply before the first of these texts
    (the text is not part of the reply); `response_format` constrains it to JSON.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    stop: list[str] = []
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: ResponseFormat | None = None


class PromptOptions(BaseModel):
    """What a stateless client (the OpenAI-compatible API) says about the prompt itself.

    `instructions` replace the default system prompt; `context` are turns the client sent before
    its message, placed after the conversation's own history; `max_tokens` caps the reply below
    the model's limit; `sampling` goes with the inference request to the model.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    instructions: str | None = None
    context: list[ChatTurn] = []
    max_tokens: int | None = None
    sampling: SamplingOptions = SamplingOptions()


class MessageSubmitted(Event):
    """A user's message, accepted by the API; `response_id` names the reply it will get."""

    type: Literal["MessageSubmitted"] = "MessageSubmitted"
    schema_version: Literal[1] = 1
    message_id: str
    response_id: str
    content: str
    model: str
    options: PromptOptions = PromptOptions()
    # Set when the user asked to regenerate a reply: the same message (same message_id) is
    # answered anew by `response_id`, and the reply named here leaves history and context.
    replaces: str | None = None


class MessageAccepted(Event):
    """Moderation passed the message. It carries the message and where its submission is in the
    log, so context assembly needs the views to cover only what came before (usually long done).
    `inference_requested`: the processor that accepted it also wrote its InferenceRequested (steno
    assembles the prompt in the same step since this field exists); false in older events, whose
    prompt a processor builds when it reads them."""

    type: Literal["MessageAccepted"] = "MessageAccepted"
    schema_version: Literal[2] = 2
    message_id: str
    response_id: str
    model: str
    content: str
    submitted_offset: int  # -1: unknown (a version 1 event written before the field existed)
    scores: dict[str, float] = {}
    options: PromptOptions = PromptOptions()
    inference_requested: bool = False

    @staticmethod
    def upcast_v1_v2(data: dict[str, typing.Any]) -> dict[str, typing.Any]:
        """Version 1 gained `content` and `submitted_offset` as required fields without a version
        bump, so the log holds version 1 events both with and without them. The older ones cannot
        recover them: the message's text is in its MessageSubmitted (same `message_id`), which is
        where history takes it from, and its offset is unknown (-1)."""
        return {"content": "", "submitted_offset": -1, **data}


class MessageBlocked(Event):
    type: Literal["MessageBlocked"] = "MessageBlocked"
    schema_version: Literal[1] = 1
    message_id: str
    response_id: str
    categories: list[str]
    scores: dict[str, float] = {}
    reason: str


class ResponseCompleted(Event):
    """The final reply: full text and usage, so history can be rebuilt from this log alone."""

    type: Literal["ResponseCompleted"] = "ResponseCompleted"
    schema_version: Literal[1] = 1
    message_id: str
    response_id: str
    text: str
    finish_reason: str
    usage: Usage
    attempt: int = 1


class ResponseFailed(Event):
    type: Literal["ResponseFailed"] = "ResponseFailed"
    schema_version: Literal[1] = 1
    message_id: str
    response_id: str
    error: str
    attempt: int = 1


class ResponseCancelled(Event):
    """The user stopped the reply; `text` is what had been generated, kept in history."""

    type: Literal["ResponseCancelled"] = "ResponseCancelled"
    schema_version: Literal[1] = 1
    message_id: str
    response_id: str
    text: str
    attempt: int = 1


# --- inference requests ------------------------------------------------------------------


class InferenceRequested(Event):
    type: Literal["InferenceRequested"] = "InferenceRequested"
    schema_version: Literal[1] = 1
    message_id: str
    response_id: str
    model: str
    prompt: list[ChatTurn]
    prompt_tokens: int
    max_tokens: int
    attempt: int = 1
    sampling: SamplingOptions = SamplingOptions()  # the client's, as its PromptOptions carried them


# --- token stream: live streaming, resume, analytics -------------------------------------


class ResponseStarted(Event):
    type: Literal["ResponseStarted"] = "ResponseStarted"
    schema_version: Literal[1] = 1
    response_id: str
    attempt: int = 1


class TokenGenerated(Event):
    type: Literal["TokenGenerated"] = "TokenGenerated"
    schema_version: Literal[1] = 1
    response_id: str
    seq: int
    text: str
    attempt: int = 1


class ResponseRestarted(Event):
    """A retried generation begins: clients discard the partial text of earlier attempts."""

    type: Literal["ResponseRestarted"] = "ResponseRestarted"
    schema_version: Literal[1] = 1
    response_id: str
    attempt: int


class ResponseEnded(Event):
    """The last event of a response on the token stream, whatever its outcome."""

    type: Literal["ResponseEnded"] = "ResponseEnded"
    schema_version: Literal[1] = 1
    response_id: str
    outcome: Literal["completed", "failed", "cancelled", "blocked"]
    finish_reason: str = ""
    detail: str = ""
    attempt: int = 1
    usage: Usage | None = None  # so a client of the token stream alone can report usage


# --- control ------------------------------------------------------------------------------


class GenerationCancelRequested(Event):
    type: Literal["GenerationCancelRequested"] = "GenerationCancelRequested"
    schema_version: Literal[1] = 1
    response_id: str


# --- dead letters -------------------------------------------------------------------------


class DeadLetter(BaseModel):
    """An input a processor could not handle; kept raw so it can be inspected and replayed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["DeadLetter"] = "DeadLetter"
    schema_version: Literal[1] = 1
    event_id: str = Field(default_factory=new_id)
    occurred_at: datetime = Field(default_factory=utc_now)
    source_topic: str
    source_partition: int
    source_offset: int
    processor: str
    reason: str
    payload: str


AnyEvent = Annotated[
    ConversationStarted
    | ConversationRenamed
    | ConversationDeleted
    | MessageSubmitted
    | MessageAccepted
    | MessageBlocked
    | ResponseCompleted
    | ResponseFailed
    | ResponseCancelled
    | InferenceRequested
    | ResponseStarted
    | TokenGenerated
    | ResponseRestarted
    | ResponseEnded
    | GenerationCancelRequested
    | DeadLetter,
    Field(discriminator="type"),
]


def event_classes() -> list[type[Event | DeadLetter]]:
    """Every class of `AnyEvent`: what the log can hold, for the decoder, exports and tests."""
    union = typing.get_args(AnyEvent)[0]
    return list(typing.get_args(union))


TERMINAL_CONVERSATION_EVENTS = (ResponseCompleted, ResponseFailed, ResponseCancelled, MessageBlocked)
