"""The conversation reader reads no view for a message with no earlier turns (rule 3 still holds)."""

from typing import cast

from projections.active_context import ActiveContext
from projections.history import History
from schemas.events import ChatTurn, MessageAccepted
from stream_processors.conversation import ConversationReader
from stream_processors.conversation_positions import Earlier


class Unreadable:
    """A view that must not be read."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the view was read ({name})")


ACCEPTED = MessageAccepted(
    conversation_id="c",
    user_id="u",
    message_id="m",
    response_id="r",
    model="scripted",
    content="hi",
    submitted_offset=7,
)


async def test_the_first_message_of_a_conversation_is_its_whole_prompt_without_reading_a_view() -> None:
    reader = ConversationReader(cast(ActiveContext, Unreadable()), cast(History, Unreadable()), wait_s=1.0)

    turns = await reader.turns_through(ACCEPTED, partition=0, earlier=Earlier(covered_at=6, turns=False))

    assert turns == [ChatTurn(role="user", content="hi")]
