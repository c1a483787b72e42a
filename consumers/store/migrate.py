"""Versioned schema migrations: `consumers/store/migrations/NNNN_name.sql`, applied in order.

Each migration runs in its own transaction and is recorded in `schema_migrations`. A session
advisory lock serialises migrators, so workers that start together do not race: the first
applies, the others wait and find nothing left to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from typing import Final

import psycopg

from consumers.store.connect import connect_sync, wrap_error, wrapped
from streams.errors import ConfigurationError

__all__ = ["Migration", "migrate", "migrations"]

# pg_advisory_lock key that serialises migrators (the ASCII of "crisiswa" as a bigint).
MIGRATION_LOCK_KEY: Final = 0x6372697369737761

_MIGRATION_NAME: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # file name without `.sql`, e.g. "0001_initial"
    sql: str


def migrations() -> list[Migration]:
    """The packaged migrations, in version order."""
    found: dict[int, Migration] = {}
    for entry in files("consumers.store.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise ConfigurationError(f"two migrations with version {version:04d}")
        found[version] = Migration(version, entry.name[:-4], entry.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


def migrate(url: str) -> list[str]:
    """Bring the database at `url` to the latest schema; the names of the migrations applied.

    Idempotent, and safe to run from several processes at once (advisory lock). Blocking: from
    async code call it with `asyncio.to_thread`.
    """
    pending = migrations()
    applied: list[str] = []
    with connect_sync(url) as conn, wrapped("migrating the database"):
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in pending:
                if migration.version in done:
                    continue
                try:
                    with conn.transaction():
                        # No parameters: sent as a simple query, so a file may hold several
                        # statements (and $$-quoted bodies, untouched by %-placeholders).
                        conn.execute(migration.sql.encode("utf-8"))
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                            (migration.version, migration.name),
                        )
                except psycopg.Error as exc:
                    raise wrap_error(exc, f"migration {migration.name}") from exc
                applied.append(migration.name)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied
