"""Apply steno's Cassandra schema: the ordered CQL files in `infra/migrations/`, each exactly once.

Cassandra has no transactional DDL, so two safeguards work together:
- every applied file is recorded (version, name, checksum) in `<keyspace>.schema_migrations`,
  so a file runs once, and editing a file after it was applied is refused instead of silently
  diverging between machines;
- every statement should still be written idempotently (`IF NOT EXISTS`), so a migration that
  died half-way simply runs again in full.

Files are named `NNN_description.cql` and run in NNN order. `${keyspace}` in a file is replaced
by `settings.cassandra.keyspace`; statements after the keyspace exists run inside it, so table
migrations need no keyspace prefix. Run with `python -m infra.migrate`.

The keyspace itself is created first, with the replication settings ask for (`replication()`):
SimpleStrategy with one replica on a single node, NetworkTopologyStrategy with RF 3 in a cluster.
The first migration's own CREATE KEYSPACE IF NOT EXISTS then leaves it alone.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cassandra.cluster import Session

from infra import cassandra
from infra.process import say
from infra.settings import REPO_ROOT, settings

MIGRATIONS_DIR = REPO_ROOT / "infra" / "migrations"
FILE_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.cql$")

HISTORY_TABLE = """
CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations (
    version int PRIMARY KEY,
    name text,
    checksum text,
    applied_at timestamp
)"""


class MigrationError(RuntimeError):
    """The migrations on disk disagree with what the database says was applied."""


@dataclass(frozen=True)
class Migration:
    """One CQL file: its order, name, statements and a checksum to detect later edits."""

    version: int
    name: str
    cql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.cql.encode()).hexdigest()

    def statements(self, keyspace: str) -> list[str]:
        return split_statements(self.cql.replace("${keyspace}", keyspace))


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migration files in version order; a misnamed or duplicate version is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.cql")):
        match = FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNN_description.cql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is used twice")
        found[version] = Migration(version, path.stem, path.read_text())
    return [found[v] for v in sorted(found)]


def split_statements(cql: str) -> list[str]:
    """Split a CQL script on `;`, ignoring comments and semicolons inside quotes or $$ bodies."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(cql)
    while i < n:
        two = cql[i : i + 2]
        if two in ("--", "//"):  # line comment: drop it, keep the newline
            newline = cql.find("\n", i)
            i = n if newline < 0 else newline
            continue
        if two == "/*":  # block comment: counts as whitespace
            current.append(" ")
            i = _skip_to(cql, i + 2, "*/")
            continue
        end = _quoted_end(cql, i)
        if end > i:
            current.append(cql[i:end])
            i = end
            continue
        if cql[i] == ";":
            statements.append("".join(current).strip())
            current = []
        else:
            current.append(cql[i])
        i += 1
    statements.append("".join(current).strip())
    return [s for s in statements if s]


def _skip_to(text: str, start: int, marker: str) -> int:
    """Index just past the next `marker` (or the end): used to drop comments."""
    found = text.find(marker, start)
    return len(text) if found < 0 else found + len(marker)


def _quoted_end(text: str, i: int) -> int:
    """If a string, quoted name or $$ body starts at i, the index just past it; else i."""
    for opener, closer in (("$$", "$$"), ("'", "'"), ('"', '"')):
        if text.startswith(opener, i):
            j = i + len(opener)
            while True:
                k = text.find(closer, j)
                if k < 0:
                    return len(text)
                if len(closer) == 1 and text.startswith(closer * 2, k):
                    j = k + 2  # '' or "" is an escaped quote, not the end
                    continue
                return k + len(closer)
    return i


def replication() -> dict[str, str]:
    """The keyspace's replication as settings give it: one replica on a single node (what the
    first migration always created), NetworkTopologyStrategy over the datacenter otherwise."""
    c = settings.cassandra
    if c.replication_factor == 1:
        return {"class": "SimpleStrategy", "replication_factor": "1"}
    return {"class": "NetworkTopologyStrategy", c.datacenter: str(c.replication_factor)}


def ensure_keyspace(session: Session, keyspace: str) -> None:
    """Create the keyspace with the configured replication unless it exists (an existing one is
    left as it is: changing replication needs a repair, which is an operator's decision)."""
    options = ", ".join(f"'{key}': '{value}'" for key, value in replication().items())
    session.execute(f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{{options}}}")


def applied(session: Session, keyspace: str) -> dict[int, str]:
    """version -> checksum of what this database already ran (nothing, before the keyspace).

    Creates the history table when the keyspace exists without it, so the query can't fail.
    """
    if session.cluster.metadata.keyspaces.get(keyspace) is None:
        return {}
    session.execute(HISTORY_TABLE.format(keyspace=keyspace))
    rows = session.execute(f"SELECT version, checksum FROM {keyspace}.schema_migrations")
    return {row.version: row.checksum for row in rows}


def apply(migration: Migration, session: Session, keyspace: str) -> None:
    """Run one migration's statements in order, then record it."""
    for statement in migration.statements(keyspace):
        if session.cluster.metadata.keyspaces.get(keyspace) is not None:
            session.set_keyspace(keyspace)
        session.execute(statement)
    if session.cluster.metadata.keyspaces.get(keyspace) is None:
        raise MigrationError(f"after {migration.name}, keyspace {keyspace} still does not exist")
    session.execute(HISTORY_TABLE.format(keyspace=keyspace))
    session.execute(
        f"INSERT INTO {keyspace}.schema_migrations (version, name, checksum, applied_at) VALUES (%s, %s, %s, %s)",
        (migration.version, migration.name, migration.checksum, datetime.now(UTC)),
    )


def apply_all(keyspace: str | None = None, directory: Path = MIGRATIONS_DIR) -> int:
    """Apply every pending migration in order; returns how many ran. Safe to run any time."""
    keyspace = keyspace or settings.cassandra.keyspace
    migrations = discover(directory)
    cluster, session = cassandra.connect(timeout_s=30.0)
    try:
        ensure_keyspace(session, keyspace)
        done = applied(session, keyspace)
        _check_unchanged(migrations, done)
        pending = [m for m in migrations if m.version not in done]
        say(f"cassandra: {len(done)} migration(s) already applied, {len(pending)} to apply")
        for migration in pending:
            say(f"cassandra: applying {migration.name}")
            apply(migration, session, keyspace)
        return len(pending)
    finally:
        cluster.shutdown()


def _check_unchanged(migrations: list[Migration], done: dict[int, str]) -> None:
    """Refuse to run when an applied file was edited: add a new migration instead."""
    for migration in migrations:
        recorded = done.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"{migration.name} was edited after it was applied; put the change in a new migration file instead"
            )


def main() -> None:
    apply_all()


if __name__ == "__main__":
    main()
