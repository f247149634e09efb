"""The migration runner's file handling, without a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.migrate import MigrationError, discover, split_statements


def test_split_ignores_semicolons_in_strings_comments_and_bodies() -> None:
    script = """
    -- a comment; not a statement
    CREATE TABLE t (k int PRIMARY KEY, v text); /* block; comment */
    INSERT INTO t (k, v) VALUES (1, 'a;b''c');
    CREATE FUNCTION f (x int) RETURNS NULL ON NULL INPUT RETURNS int
        LANGUAGE java AS $$ return x; $$;
    """
    assert split_statements(script) == [
        "CREATE TABLE t (k int PRIMARY KEY, v text)",
        "INSERT INTO t (k, v) VALUES (1, 'a;b''c')",
        "CREATE FUNCTION f (x int) RETURNS NULL ON NULL INPUT RETURNS int\n        LANGUAGE java AS $$ return x; $$",
    ]


def test_repo_migrations_are_ordered_and_start_with_the_keyspace() -> None:
    migrations = discover()
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    assert "CREATE KEYSPACE IF NOT EXISTS steno" in migrations[0].statements("steno")[0]


def test_misnamed_or_duplicate_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_bad.cql").write_text("")
    with pytest.raises(MigrationError):
        discover(tmp_path)
    (tmp_path / "1_bad.cql").unlink()
    (tmp_path / "002_a.cql").write_text("")
    (tmp_path / "0002_b.cql").write_text("")
    with pytest.raises(MigrationError):
        discover(tmp_path)
