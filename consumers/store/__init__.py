"""PostgreSQL, the system of record: the live worker's store, its rows, the schema migrations
and connections.

`rows` (values) <- `connect` (connections, error meaning) <- `migrate` (schema) and `postgres`
(`Store`: one transaction per batch).
"""

from consumers.store.connect import blocking_session, check_url, is_transient, with_database
from consumers.store.migrate import Migration, check_schema, migrate, migrations
from consumers.store.postgres import CLOCKS_CHANNEL, Store
from consumers.store.rows import PENDING, AuditRow, Batch, ClockRow, Counts, clock_row

__all__ = [
    "CLOCKS_CHANNEL",
    "PENDING",
    "AuditRow",
    "Batch",
    "ClockRow",
    "Counts",
    "Migration",
    "Store",
    "blocking_session",
    "check_schema",
    "check_url",
    "clock_row",
    "is_transient",
    "migrate",
    "migrations",
    "with_database",
]
