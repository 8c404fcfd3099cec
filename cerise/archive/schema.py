"""The archive's schema, brought up to date by numbered SQL files.

`migrations/NNNN_<what>.sql` are applied in order, each once, all in one transaction that
first takes a transaction-level advisory lock: the operator and the apiserver may start
together, and one of them migrates while the other waits and then finds nothing to do.
PostgreSQL's DDL is transactional, so a crash mid-way leaves the schema as it was.
`schema_migrations` records the versions applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

LOCK_KEY = 0x63657269_7365_01
"""The advisory lock taken while migrating (any constant no other program of the database
uses; this one spells "cerise")."""
_FILE = re.compile(r"([0-9]{4})_[a-z0-9_]+\.sql")


@dataclass(frozen=True)
class Migration:
    """One numbered step of the schema."""

    version: int
    name: str
    text: str


def migrations() -> list[Migration]:
    """The migrations shipped with this version, in order."""
    found = []
    for entry in resources.files("cerise.archive").joinpath("migrations").iterdir():
        match = _FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), entry.name, entry.read_text()))
    found.sort(key=lambda migration: migration.version)
    return found


async def migrate(connection: AsyncConnection[TupleRow]) -> list[int]:
    """Apply the migrations the database lacks; the versions applied now."""
    applied_now = []
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())")
        cursor = await connection.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in await cursor.fetchall()}
        for migration in migrations():
            if migration.version in done:
                continue
            await connection.execute(migration.text.encode())  # several statements, no parameters
            await connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name))
            applied_now.append(migration.version)
    return applied_now
