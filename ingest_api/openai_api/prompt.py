"""An OpenAI request's messages as one steno message plus its prompt options.

The last message is the user's new message; system and developer messages become the
instructions (in place of steno's default system prompt); the user and assistant turns before
it become the context the client sent. Anything steno cannot honour (tool calls, images, a
conversation that does not end with the user) is refused with the offending field named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_json

from ingest_api.openai_api.errors import invalid
from schemas.events import ChatTurn, PromptOptions, SamplingOptions

INSTRUCTION_ROLES = {"system", "developer"}
TURN_ROLES = {"user", "assistant"}
TEXT_PARTS = {"text", "input_text", "output_text"}
TITLE_CHARS = 80


@dataclass(frozen=True)
class Turn:
    role: str
    text: str


@dataclass(frozen=True)
class Prompt:
    content: str
    options: PromptOptions

    @property
    def size(self) -> int:
        """Bytes the text takes in the MessageSubmitted event that carries it (JSON-encoded)."""
        return len(to_json(self.content)) + len(self.options.model_dump_json())

    @property
    def title(self) -> str:
        """A title for the conversation steno records the exchange in: how the user began."""
        first = self.options.context[0].content if self.options.context else self.content
        return " ".join(first.split())[:TITLE_CHARS]


def turn(message: Any, param: str) -> Turn:
    """One chat message or Responses input item (`{"role", "content"}`) as text."""
    if not isinstance(message, dict):
        raise invalid("each message must be an object with `role` and `content`", param)
    if message.get("type", "message") != "message":
        raise invalid(f"input items of type {message['type']!r} are not supported: send messages", f"{param}.type")
    role = message.get("role")
    if role not in INSTRUCTION_ROLES | TURN_ROLES:
        raise invalid(f"role {role!r} is not supported: use system, developer, user or assistant", f"{param}.role")
    content = message.get("content")
    if content is None and role == "assistant":  # OpenAI's shape of an assistant turn that only called tools
        return Turn(role, "")
    return Turn(role, _text(content, f"{param}.content"))


def prompt(
    turns: Sequence[Turn],
    instructions: str | None = None,
    max_tokens: int | None = None,
    sampling: SamplingOptions | None = None,
) -> Prompt:
    if not turns or turns[-1].role != "user":
        raise invalid("the last message must be the user's: it is the one steno answers", "messages")
    *before, last = turns
    system = [instructions] if instructions else []
    system += [t.text for t in before if t.role in INSTRUCTION_ROLES]
    context = [ChatTurn.model_validate({"role": t.role, "content": t.text}) for t in before if t.role in TURN_ROLES]
    options = PromptOptions(
        instructions="\n\n".join(system) or None,
        context=context,
        max_tokens=max_tokens,
        sampling=sampling or SamplingOptions(),
    )
    if not last.text.strip():
        raise invalid("the user's message is empty: send the text to answer", "messages")
    return Prompt(content=last.text, options=options)


def _text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid("`content` must be a string or a list of text parts", param)
    texts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in TEXT_PARTS or not isinstance(part.get("text"), str):
            raise invalid("only text content parts are supported", f"{param}.{index}")
        texts.append(part["text"])
    return "".join(texts)
