"""The export's files: where they go, what they are named, how they are written and cleaned up.

    <out>/day=YYYY-MM-DD/type=<event type>/<topic>.p<partition>.<first offset>-<last offset>.parquet

A flush writes, for each partition it holds records of, one file per (day, type) among them, all
named by the same offset range: that partition's first and last record in the flush. Offsets are
committed (last + 1) only once every file is in place. Hence, after any crash:

- a redelivered range is written under the same names (an atomic rename replaces the file), so
  rows are never doubled;
- a file whose range starts at or after the partition's committed offset belongs to a flush whose
  commit never happened: `prepare_partition` deletes it before its records are read again.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_NAME = re.compile(r"^(?P<topic>.+)\.p(?P<partition>\d+)\.(?P<first>\d{20})-(?P<last>\d{20})\.parquet$")


@dataclass(frozen=True)
class OffsetRange:
    """The records of one partition that a file holds rows of, first and last inclusive."""

    topic: str
    partition: int
    first: int
    last: int

    @property
    def file_name(self) -> str:
        return f"{self.topic}.p{self.partition}.{self.first:020d}-{self.last:020d}.parquet"

    @classmethod
    def parse(cls, file_name: str) -> OffsetRange | None:
        """The range a file name states; None for a name the export did not write."""
        match = _NAME.match(file_name)
        if match is None:
            return None
        return cls(match["topic"], int(match["partition"]), int(match["first"]), int(match["last"]))


def resume(start: int, written: list[OffsetRange]) -> tuple[int, list[OffsetRange]]:
    """Where to read a partition from, and which of its files to delete first.

    `start` is the committed offset (or the log's first, when there is none). Files at or after it
    are uncommitted leftovers, re-read and rewritten. A file that straddles it (the log's retention
    cut a flushed range, and a reset now starts inside it) already holds the rest of its range,
    so reading resumes after that file instead of writing those rows twice.
    """
    stale = [r for r in written if r.first >= start]
    straddling = [r.last + 1 for r in written if r.first < start <= r.last]
    return max([start, *straddling]), stale


def prepare_partition(out: Path, topic: str, partition: int, start: int) -> int:
    """Delete the partition's uncommitted leftovers under `out`; returns the offset to read from."""
    files = [
        (parsed, path)
        for path in out.glob(f"day=*/type=*/{topic}.p{partition}.*.parquet")
        if (parsed := OffsetRange.parse(path.name)) is not None
    ]
    position, stale = resume(start, [written for written, _ in files])  # one range has a file per day and type
    temporaries = out.glob(f"day=*/type=*/.{topic}.p{partition}.*.tmp")  # a write cut short
    for leftover in [*(path for written, path in files if written in stale), *temporaries]:
        leftover.unlink(missing_ok=True)
    return position


def write_atomically(table: pa.Table, path: Path) -> None:
    """Write under a hidden temporary name, flush it to disk, then rename: readers and a crash
    see either no file or the whole file, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temporary, compression="zstd")
    _fsync(temporary)
    os.replace(temporary, path)
    _fsync(path.parent)  # the rename itself is durable only once the folder is


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
