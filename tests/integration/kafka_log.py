"""Read back what the log holds for one conversation, to check the events a flow wrote."""

from __future__ import annotations

from infra.partition_reads import records_since
from schemas.events import id_created_ms
from schemas.serde import UndecodableEvent, decode
from schemas.topics import Topic, partition_for


def events_of(topic: Topic, conversation_id: str) -> list:
    """Every decodable event of the conversation on the topic, in log order."""
    since_ms = (id_created_ms(conversation_id) or 0) - 5_000
    found = []
    for message in records_since(topic.name, partition_for(conversation_id, topic), since_ms, reader="steno-tests"):
        try:
            event = decode(message.value())
        except UndecodableEvent:
            continue
        if getattr(event, "conversation_id", None) == conversation_id:
            found.append(event)
    return found
