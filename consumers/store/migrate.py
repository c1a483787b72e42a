"""Versioned schema migrations: `consumers/store/migrations/NNNN_name.sql`, applied in order.

Each migration runs in its own transaction and is recorded in `schema_migrations`. A session
advisory lock serialises migrators, so workers that start together do not race: the first
applies, the others wait and find nothing left to do.

Which code may run on which schema (`check_schema`, before a worker starts)
----------------------------------------------------------------------------
A worker needs every migration it ships applied: an unmigrated or older database is refused
("run 'crisiswatch db migrate'"). A database migrated by a *newer* release is refused too,
unless each migration this worker does not know says older workers may run on it: a line
`-- oldest worker: N` in the migration file (recorded in `schema_migrations.oldest_worker`)
lets workers whose newest migration is N or later run beside it (an additive migration:
a new table or a nullable column). Without that line a migration needs its own release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from typing import Final

import psycopg

from consumers.store.connect import connect_sync, wrap_error, wrapped
from streams.errors import ConfigurationError, ServiceError

__all__ = ["Migration", "check_schema", "migrate", "migrations"]

# pg_advisory_lock key that serialises migrators (the ASCII of "crisiswa" as a bigint).
MIGRATION_LOCK_KEY: Final = 0x6372697369737761

_MIGRATION_NAME: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_OLDEST_WORKER: Final = re.compile(r"^-- oldest worker: (\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # file name without `.sql`, e.g. "0001_initial"
    sql: str

    @property
    def oldest_worker(self) -> int:
        """The oldest worker (by its newest migration) that may run on this schema."""
        match = _OLDEST_WORKER.search(self.sql)
        return int(match.group(1)) if match else self.version


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
            conn.execute(
                "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS oldest_worker integer"
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
                            "INSERT INTO schema_migrations (version, name, oldest_worker)"
                            " VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.oldest_worker),
                        )
                except psycopg.Error as exc:
                    raise wrap_error(exc, f"migration {migration.name}") from exc
                applied.append(migration.name)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied


def check_schema(url: str) -> int:
    """The schema version of the database at `url`, if this code may run on it; otherwise
    `ServiceError` with one line saying what to do (module docstring). Blocking."""
    known = {m.version: m for m in migrations()}
    latest = max(known)
    with connect_sync(url) as conn, wrapped("reading the schema version"):
        row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        applied: dict[int, int] = {}
        if row is not None and row[0]:
            column = conn.execute(
                "SELECT count(*) FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = 'schema_migrations'"
                " AND column_name = 'oldest_worker'"
            ).fetchone()
            query = (
                "SELECT version, coalesce(oldest_worker, version) FROM schema_migrations"
                if column is not None and column[0]
                else "SELECT version, version FROM schema_migrations"
            )
            applied = {int(v): int(o) for v, o in conn.execute(query)}
    if not applied:
        raise ServiceError(
            "the database has no crisiswatch schema: run 'crisiswatch db migrate' first"
        )
    missing = [known[v].name for v in sorted(known.keys() - applied.keys())]
    if missing:
        raise ServiceError(
            f"the database schema is older than this worker (not applied: {', '.join(missing)}):"
            " run 'crisiswatch db migrate' with this release first"
        )
    newer = sorted(v for v, oldest in applied.items() if v not in known and oldest > latest)
    if newer:
        raise ServiceError(
            f"the database schema (version {max(applied)}) is newer than this worker (version"
            f" {latest}) and migration {newer[0]} does not let older workers run on it:"
            " run the release that migrated it"
        )
    return max(applied)
