"""Reading token-stream records: a token's routing fields without pydantic, everything else decoded in full."""

from __future__ import annotations

import json

import pytest

from ingest_api import positions
from ingest_api.positions import LoggedEvent, logged
from schemas.events import MessageSubmitted, ResponseEnded, ResponseStarted, TokenGenerated, new_id
from schemas.serde import UndecodableEvent, decode, encode

CONVERSATION, RESPONSE = new_id(), new_id()


def a_token(text: str = " t5") -> TokenGenerated:
    return TokenGenerated(conversation_id=CONVERSATION, user_id="u", response_id=RESPONSE, seq=5, text=text)


def test_a_token_is_routed_and_streamed_without_a_pydantic_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the model was the token feed's largest cost per token; only `.event` builds it."""
    token = a_token("naïve \n ☕")
    raw = encode(token)
    decoded: list[bytes | None] = []

    def counted(raw: bytes | None) -> object:
        decoded.append(raw)
        return decode(raw)

    monkeypatch.setattr(positions, "decode", counted)
    item = logged(41, raw)
    assert item is not None
    assert (item.offset, item.response_id, item.conversation_id, item.token) == (
        41,
        RESPONSE,
        CONVERSATION,
        (5, "naïve \n ☕"),
    )
    assert not item.ends and not item.begins
    assert decoded == []
    assert item.event == token  # on demand: the same model as ever
    assert item == LoggedEvent(41, token)


def test_other_events_are_decoded_in_full() -> None:
    started = ResponseStarted(conversation_id=CONVERSATION, user_id="u", response_id=RESPONSE)
    ended = ResponseEnded(conversation_id=CONVERSATION, user_id="u", response_id=RESPONSE, outcome="completed")
    first, last = logged(1, encode(started)), logged(9, encode(ended))
    assert first is not None and first.begins and first.event == started and first.token is None
    assert last is not None and last.ends and last.event == ended
    retried = logged(2, encode(started.model_copy(update={"attempt": 2})))
    assert retried is not None and not retried.begins


def test_another_responses_token_is_skipped_when_one_response_is_read() -> None:
    assert logged(3, encode(a_token()), response_id=new_id()) is None
    assert logged(3, encode(a_token()), response_id=RESPONSE) is not None


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[1, 2]",
        None,
        json.dumps({**json.loads(encode(a_token())), "surprise": 1}).encode(),  # a field it does not know
        json.dumps({**json.loads(encode(a_token())), "seq": [5]}).encode(),
        json.dumps({**json.loads(encode(a_token())), "occurred_at": "yesterday"}).encode(),  # only decode checks
        encode(
            MessageSubmitted(
                conversation_id=CONVERSATION,
                user_id="u",
                message_id=new_id(),
                response_id=RESPONSE,
                content="hi",
                model="m",
            )
        ),
    ],
    ids=["not-json", "not-an-object", "tombstone", "unknown-field", "bad-seq", "bad-time", "other-topic"],
)
def test_what_decode_refuses_is_refused(raw: bytes | None) -> None:
    """Refused when read, or (a bad timestamp, which only `decode` checks) when its model is asked for."""
    with pytest.raises(UndecodableEvent):
        _read_in_full(raw)


def _read_in_full(raw: bytes | None) -> object:
    item = logged(7, raw)
    return None if item is None else item.event
