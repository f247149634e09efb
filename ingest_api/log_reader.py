"""Read one response's events back from the token stream, for late joiners and resumes.

A response's events all live in its conversation's partition and were all written after its
id was minted, so the read starts at the offset for that time and stops at the response's end
or the partition's current end (`infra.partition_reads`). It always reads the whole response (a
few hundred events at most), so a client resuming after the end learns that it has everything.
"""

from __future__ import annotations

from contextlib import closing

from infra.partition_reads import records_since
from ingest_api.positions import LoggedEvent, logged
from ingest_api.token_feed import CLOCK_SKEW_MS
from schemas.events import id_created_ms
from schemas.serde import UndecodableEvent
from schemas.topics import TOKENS, partition_for


def read_response(conversation_id: str, response_id: str) -> list[LoggedEvent]:
    """Blocking: the response's events that the log holds right now.

    Raises `infra.partition_reads.PartitionReadIncomplete` when the partition's end is not
    reached in time (what was read is not the whole response), KafkaException when Kafka does
    not answer.
    """
    since_ms = (id_created_ms(response_id) or 0) - CLOCK_SKEW_MS
    records = records_since(TOKENS.name, partition_for(conversation_id, TOKENS), since_ms, reader="steno-api-reader")
    found: list[LoggedEvent] = []
    with closing(records):
        for message in records:
            try:
                item = logged(message.offset() or 0, message.value(), response_id)  # others': not decoded
            except UndecodableEvent:
                continue
            if item is not None:
                found.append(item)
                if item.ends:
                    break
    return found
