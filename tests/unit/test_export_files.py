"""The Parquet export's pure parts: file names, where a partition resumes and what it deletes
first, atomic writes, and one Arrow schema per event type that every event of it fits."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from projections.analytics.arrow_schema import arrow_type, event_schema
from projections.analytics.parquet_files import OffsetRange, prepare_partition, resume, write_atomically
from schemas.events import Event, MessageBlocked, event_classes
from schemas.serde import decode

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events"
EVENT_CLASSES = [cls for cls in event_classes() if issubclass(cls, Event)]


def test_a_file_name_states_its_offset_range_and_sorts_by_it() -> None:
    written = OffsetRange("steno.inference-requests", 3, 120, 4711)

    assert written.file_name == "steno.inference-requests.p3.00000000000000000120-00000000000000004711.parquet"
    assert OffsetRange.parse(written.file_name) == written
    assert OffsetRange.parse(".steno.tokens.p3.00000000000000000120-00000000000000004711.parquet.tmp") is None
    assert OffsetRange.parse("notes.parquet") is None
    names = [OffsetRange("t", 0, first, first + 9).file_name for first in (0, 10, 100)]
    assert sorted(names) == names


def test_a_partition_resumes_at_its_commit_and_drops_the_files_past_it() -> None:
    committed = [OffsetRange("t", 0, 0, 99), OffsetRange("t", 0, 100, 149)]
    uncommitted = [OffsetRange("t", 0, 150, 180), OffsetRange("t", 0, 181, 200)]

    assert resume(150, committed + uncommitted) == (150, uncommitted)
    assert resume(0, committed) == (0, committed)  # a reset rewrites everything still in the log
    assert resume(7, []) == (7, [])


def test_a_reset_into_a_file_the_retention_cut_resumes_after_that_file() -> None:
    files = [OffsetRange("t", 0, 0, 99), OffsetRange("t", 0, 100, 149), OffsetRange("t", 0, 150, 180)]

    # the log now begins at 120: rows 120..149 are in a file already, and 0..119 exist only in files
    assert resume(120, files) == (150, [files[2]])


def test_prepare_deletes_only_the_partitions_uncommitted_files_and_temporaries(tmp_path: Path) -> None:
    def touch(day: str, event_type: str, name: str) -> Path:
        path = tmp_path / f"day={day}" / f"type={event_type}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return path

    kept = touch("2026-03-01", "TokenGenerated", OffsetRange("steno.tokens", 1, 0, 9).file_name)
    other_partition = touch("2026-03-02", "TokenGenerated", OffsetRange("steno.tokens", 11, 10, 19).file_name)
    other_topic = touch("2026-03-02", "ResponseEnded", OffsetRange("x.steno.tokens", 1, 10, 19).file_name)
    stale = [
        touch("2026-03-02", "TokenGenerated", OffsetRange("steno.tokens", 1, 10, 19).file_name),
        touch("2026-03-02", "ResponseEnded", OffsetRange("steno.tokens", 1, 10, 19).file_name),
        touch("2026-03-02", "ResponseEnded", f".{OffsetRange('steno.tokens', 1, 20, 29).file_name}.tmp"),
    ]

    assert prepare_partition(tmp_path, "steno.tokens", 1, start=10) == 10
    assert [path.exists() for path in stale] == [False, False, False]
    assert kept.exists() and other_partition.exists() and other_topic.exists()


def test_an_atomic_write_leaves_the_whole_file_under_its_name_only(tmp_path: Path) -> None:
    path = tmp_path / "day=2026-03-01" / "type=X" / "t.p0.00000000000000000000-00000000000000000001.parquet"
    table = pa.table({"n": [1, 2]})

    write_atomically(table, path)
    write_atomically(table, path)  # a redelivered range replaces its file

    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert pq.read_table(path).equals(table)


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda cls: cls.__name__)
def test_every_event_type_fits_its_schema(cls: type[Event]) -> None:
    samples = [p for p in (FIXTURES / cls.__name__).glob("v*.json") if not p.name.endswith(".schema.json")]
    assert samples, f"no frozen sample of {cls.__name__}"
    position = {"kafka_topic": "t", "kafka_partition": 0, "kafka_offset": 1}
    rows = [decode(sample.read_bytes()).model_dump(exclude={"type"}) | position for sample in samples]

    table = pa.Table.from_pylist(rows, schema=event_schema(cls))

    assert table.num_rows == len(samples)
    assert "type" not in table.column_names  # the folder says it
    assert table.column_names[-3:] == ["kafka_topic", "kafka_partition", "kafka_offset"]


def test_maps_and_lists_keep_their_shape() -> None:
    schema = event_schema(MessageBlocked)

    assert schema.field("categories").type == pa.list_(pa.string())
    assert schema.field("scores").type == pa.map_(pa.string(), pa.float64())
    assert schema.field("occurred_at").type == pa.timestamp("us", tz="UTC")
    assert not schema.field("reason").nullable


def test_a_field_of_an_unknown_kind_is_refused_with_where_to_add_it() -> None:
    with pytest.raises(TypeError, match=r"no Arrow type for .*complex.*arrow_schema"):
        arrow_type(complex)
