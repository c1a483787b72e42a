"""PostgreSQL, the system of record of the live worker: audit log, clocks, consumer positions.

A thin adapter (psycopg 3, async): it translates engine values (`Clock.to_state()`,
`Outcome`) into rows and back, and decides nothing about the rules.

Tables (schema: `consumers.store.migrate`)
-------------------------------------------
* `events`: every accepted event once per event id, append-only (a trigger refuses UPDATE
  and DELETE); of two copies of an id the first (by partition and offset) is kept, whatever
  the batch boundaries;
* `clocks`: one row per referral, CSDS-like columns derived here from the outcome and the
  engine state, plus the engine state itself (`engine_state`), which is what a restarted
  worker restores from;
* `consumer_positions`: the next offset to read per topic partition;
* `partition_leases`: the epoch and owner of each topic partition (the fence, below).

Writes: one transaction per batch
---------------------------------
`Store.write(batch)` writes a batch's audit rows, clock upserts and consumer positions in
*one* transaction, so the positions never run ahead of (or behind) the rows they produced:
after a crash the worker resumes from the stored positions and re-applies at most the events
of a batch that was never committed (the engine merge is idempotent, R8).

The write runs on a thread of its own, with a connection of its own, so PostgreSQL commits
a batch while the event loop goes on with the next one (the thread mostly waits on the
server, with the GIL released). Rows go in with COPY into per-session staging tables, then
one `INSERT ... SELECT ... ON CONFLICT` per table: a handful of round trips per batch
whatever its size. The staging tables
are created once per connection (`ON COMMIT DELETE ROWS`) rather than per transaction
(`ON COMMIT DROP`), which would insert and delete catalog rows on every batch. Clock upserts
are applied in referral-id order so that two writers touching the same referrals lock them in
the same order (no deadlock between them).

The fence: one owner per partition
----------------------------------
A worker assigned partitions takes a lease on each (`acquire`): one statement increments the
partitions' epochs and names the new owner. Every batch carries the epochs its writer holds
(`Batch.epochs`); its transaction first locks those lease rows (`FOR SHARE`, in key order)
and compares. If one has moved on, another worker was assigned the partition after this one:
the transaction rolls back and `write` raises `FencedError` naming the superseded partitions.
The lock orders the two: an `acquire` waits for a batch transaction that holds the lease rows
(so the new owner restores from a database that already holds that batch), and a batch that
starts after an `acquire` has committed sees the new epoch. A writer that stalls inside its
transaction cannot hold the new owner up for long: the writer's connection has an
`idle_in_transaction_session_timeout` (`STALLED_WRITER_TIMEOUT_MS`), after which PostgreSQL
ends its session and its transaction rolls back.

Positions only move forward: a batch that would store a lower next offset than the one stored
is refused (`ServiceError`, a bug: the pipeline's rewind seeks the consumer back to the stored
position and writes nothing).

Text PostgreSQL cannot store
----------------------------
PostgreSQL text cannot hold NUL, nor jsonb a `\\u0000` escape; UTF-8 cannot encode a lone
surrogate. The codec can pass all three through (in `source` and unknown fields). A row that
cannot be stored would fail its whole batch forever (a poison pill), so such characters are
replaced by U+FFFD on the way in, deterministically (lookups apply the same mapping).

Errors
------
psycopg errors are wrapped `from exc`: `ServiceUnavailableError` when the server cannot be
reached or the connection is lost, `ServiceError` otherwise. Retrying is the caller's
business; `is_transient(exc)` says whether a retry may succeed. A `Store` whose connection was
lost reconnects on its next call.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Self

import psycopg

from consumers.store.connect import (
    connect_async,
    connect_sync,
    unusable,
    wrap_error,
    wrapped,
)
from consumers.store.rows import PENDING, AuditRow, Batch, ClockRow, Counts
from streams.engine import Clock, Outcome, Rules
from streams.engine.outcome import BREACHED, CLOCK_REABLEMENT, CLOCK_UCR, OPEN_STATES
from streams.errors import FencedError, ServiceError
from streams.jsontext import dumps_text

__all__ = ["CLOCKS_CHANNEL", "Store"]

# LISTEN/NOTIFY channel: each batch that writes clocks notifies it (the board's change feed).
CLOCKS_CHANNEL: Final = "crisiswatch_clocks"

Connection = psycopg.AsyncConnection[tuple[Any, ...]]


# -- the store ---------------------------------------------------------------------------------

# Staging tables: one per target, same session as the writes (see module docstring).
_STAGING: Final = (
    "CREATE TEMP TABLE IF NOT EXISTS cw_events_in ("
    " event_id text, referral_id text, type text, event_time bigint, source text,"
    " kafka_partition integer, kafka_offset bigint, document jsonb"
    ") ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS cw_clocks_in ("
    " referral_id text, kafka_partition integer, pathway text, clock_type text, region text,"
    " icb text, provider text, referral_received_at bigint, clock_start bigint,"
    " clock_stop bigint, wait_seconds bigint, wait_minutes integer, wait_nights integer,"
    " breach_at bigint, state text, exclusion_reason text, is_open boolean,"
    " contacts integer, next_change_at bigint, engine_state jsonb"
    ") ON COMMIT DELETE ROWS",
)

_COPY_EVENTS: Final = (
    "COPY cw_events_in (event_id, referral_id, type, event_time, source, kafka_partition,"
    " kafka_offset, document) FROM STDIN"
)
_INSERT_EVENTS: Final = (
    "INSERT INTO events (event_id, referral_id, type, event_time, source, kafka_partition,"
    " kafka_offset, document)"
    " SELECT event_id, referral_id, type, to_timestamp(event_time), source, kafka_partition,"
    " kafka_offset, document FROM cw_events_in"
    # COPY does not keep input order on disk: sort, so the first copy of an id wins (R8).
    " ORDER BY kafka_partition, kafka_offset"
    " ON CONFLICT (event_id) DO NOTHING"
)

_CLOCK_COLUMNS: Final = (
    "referral_id, kafka_partition, pathway, clock_type, region, icb, provider,"
    " referral_received_at, clock_start, clock_stop, wait_seconds, wait_minutes, wait_nights,"
    " breach_at, state, exclusion_reason, is_open, contacts, next_change_at, engine_state"
)
_COPY_CLOCKS: Final = "COPY cw_clocks_in (" + _CLOCK_COLUMNS + ") FROM STDIN"
_INSERT_CLOCKS: Final = (
    "INSERT INTO clocks (" + _CLOCK_COLUMNS + ", updated_at)"
    " SELECT referral_id, kafka_partition, pathway, clock_type, region, icb, provider,"
    " to_timestamp(referral_received_at), to_timestamp(clock_start), to_timestamp(clock_stop),"
    " wait_seconds, wait_minutes, wait_nights, to_timestamp(breach_at), state,"
    " exclusion_reason, is_open, contacts, to_timestamp(next_change_at), engine_state, now()"
    " FROM cw_clocks_in ORDER BY referral_id"
    " ON CONFLICT (referral_id) DO UPDATE SET"
    " kafka_partition = EXCLUDED.kafka_partition, pathway = EXCLUDED.pathway,"
    " clock_type = EXCLUDED.clock_type, region = EXCLUDED.region, icb = EXCLUDED.icb,"
    " provider = EXCLUDED.provider, referral_received_at = EXCLUDED.referral_received_at,"
    " clock_start = EXCLUDED.clock_start, clock_stop = EXCLUDED.clock_stop,"
    " wait_seconds = EXCLUDED.wait_seconds, wait_minutes = EXCLUDED.wait_minutes,"
    " wait_nights = EXCLUDED.wait_nights, breach_at = EXCLUDED.breach_at,"
    " state = EXCLUDED.state, exclusion_reason = EXCLUDED.exclusion_reason,"
    " is_open = EXCLUDED.is_open, contacts = EXCLUDED.contacts,"
    " next_change_at = EXCLUDED.next_change_at, engine_state = EXCLUDED.engine_state,"
    " updated_at = EXCLUDED.updated_at"
)
_UPSERT_POSITIONS: Final = (
    "INSERT INTO consumer_positions (topic, kafka_partition, next_offset, updated_at)"
    " SELECT topic, kafka_partition, next_offset, now()"
    " FROM unnest(%s::text[], %s::integer[], %s::bigint[])"
    " AS p(topic, kafka_partition, next_offset)"
    " ORDER BY topic, kafka_partition"
    " ON CONFLICT (topic, kafka_partition) DO UPDATE SET"
    " next_offset = EXCLUDED.next_offset, updated_at = EXCLUDED.updated_at"
    # Forward only (module docstring): a row left out here is reported by RETURNING's count.
    " WHERE consumer_positions.next_offset <= EXCLUDED.next_offset"
    " RETURNING kafka_partition"
)
_ACQUIRE: Final = (
    "INSERT INTO partition_leases (topic, kafka_partition, epoch, owner, acquired_at)"
    " SELECT %s, p, 1, %s, now() FROM unnest(%s::integer[]) AS p ORDER BY p"
    " ON CONFLICT (topic, kafka_partition) DO UPDATE SET"
    " epoch = partition_leases.epoch + 1, owner = EXCLUDED.owner,"
    " acquired_at = EXCLUDED.acquired_at"
    " RETURNING kafka_partition, epoch"
)
_LOCK_LEASES: Final = (
    "SELECT l.topic, l.kafka_partition, l.epoch FROM partition_leases l"
    " JOIN unnest(%s::text[], %s::integer[]) AS h(topic, kafka_partition)"
    " USING (topic, kafka_partition)"
    " ORDER BY l.topic, l.kafka_partition FOR SHARE OF l"
)
#: How long PostgreSQL lets the writer's connection sit idle inside a transaction before it
#: ends the session (milliseconds): a stalled writer releases its lease locks after this.
STALLED_WRITER_TIMEOUT_MS: Final = 5000

_OUTCOME_COLUMNS: Final = (
    "referral_id, pathway, clock_type, region, icb, provider, clock_start, clock_stop,"
    " wait_seconds, state, exclusion_reason"
)


class Store:
    """The worker's PostgreSQL connection: restore reads and one-transaction batch writes.

    Reads are serialised on one async connection. Writes are serialised on a second,
    blocking connection, used only by one writer thread (module docstring): a read issued
    while a write is in flight sees the database as it was before that write. Use
    `await Store.connect(url)`, or `async with await Store.connect(url) as store`.
    """

    def __init__(self, conn: Connection, url: str, rules: Rules) -> None:
        self._conn = conn
        self._url = url
        self.rules = rules
        self._lock = asyncio.Lock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crisiswatch-writer")
        self._writer_conn: psycopg.Connection[tuple[Any, ...]] | None = None  # writer thread's

    @classmethod
    async def connect(cls, url: str, *, rules: Rules | None = None) -> Store:
        """Connect to the (migrated) database at `url`.

        `rules` must be the worker's: they define `wait_nights` (local midnights) and
        `breach_at`. Raises `ServiceUnavailableError` if the server cannot be reached.
        """
        conn = await connect_async(url)
        return cls(conn, url, rules if rules is not None else Rules())

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._writer, self._close_writer)
        self._writer.shutdown(wait=True)
        await self._conn.close()

    def _close_writer(self) -> None:
        conn, self._writer_conn = self._writer_conn, None
        if conn is not None:
            conn.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- restore -------------------------------------------------------------------------------

    async def positions(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """The next offset to read per partition of `topic`; partitions never written absent."""
        async with self._session("reading consumer positions") as conn:
            cursor = await conn.execute(
                "SELECT kafka_partition, next_offset FROM consumer_positions"
                " WHERE topic = %s AND kafka_partition = ANY(%s::integer[])",
                (_clean(topic), list(partitions)),
            )
            return {int(p): int(o) for p, o in await cursor.fetchall()}

    async def open_clock_states(
        self, partitions: Iterable[int]
    ) -> list[tuple[int, dict[str, Any]]]:
        """(partition, engine state) of every open (or pending) clock of `partitions`."""
        async with self._session("reading open clocks") as conn:
            cursor = await conn.execute(
                "SELECT kafka_partition, engine_state FROM clocks"
                " WHERE is_open AND kafka_partition = ANY(%s::integer[])"
                " ORDER BY referral_id",
                (list(partitions),),
            )
            return [(int(p), state) for p, state in await cursor.fetchall()]

    async def clock_states(self, referral_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Engine states of these referrals (those with no row are absent), in one query."""
        wanted = {_clean(rid): rid for rid in referral_ids}
        if not wanted:
            return {}
        async with self._session("reading clocks") as conn:
            cursor = await conn.execute(
                "SELECT referral_id, engine_state FROM clocks WHERE referral_id = ANY(%s::text[])",
                (list(wanted),),
            )
            return {wanted[rid]: state for rid, state in await cursor.fetchall()}

    async def newest_event_time(self, partitions: Iterable[int]) -> int | None:
        """Event time (epoch seconds) of the newest stored event of `partitions`; None if
        they hold none."""
        async with self._session("reading the newest event time") as conn:
            cursor = await conn.execute(
                "SELECT extract(epoch FROM max(event_time))::bigint FROM events"
                " WHERE kafka_partition = ANY(%s::integer[])",
                (list(partitions),),
            )
            row = await cursor.fetchone()
            return int(row[0]) if row is not None and row[0] is not None else None

    # -- the fence -----------------------------------------------------------------------------

    async def acquire(self, topic: str, partitions: Iterable[int], owner: str) -> dict[int, int]:
        """Take the leases of `partitions` for `owner`: each epoch goes up by one (module
        docstring); returns {partition: epoch}, the epochs the owner's batches must carry.

        Waits for a batch transaction of the previous owner that holds the lease rows."""
        wanted = sorted(set(partitions))
        if not wanted:
            return {}
        async with self._session("taking partition leases") as conn:
            cursor = await conn.execute(_ACQUIRE, (_clean(topic), _clean(owner), wanted))
            return {int(p): int(e) for p, e in await cursor.fetchall()}

    async def leases(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """The current lease epoch of these partitions (absent: never leased); no lock."""
        async with self._session("reading partition leases") as conn:
            cursor = await conn.execute(
                "SELECT kafka_partition, epoch FROM partition_leases"
                " WHERE topic = %s AND kafka_partition = ANY(%s::integer[])",
                (_clean(topic), list(partitions)),
            )
            return {int(p): int(e) for p, e in await cursor.fetchall()}

    # -- write ---------------------------------------------------------------------------------

    async def write(self, batch: Batch) -> None:
        """Audit rows, clock upserts and positions in ONE transaction (see module docstring).

        An event id already stored is ignored (R8); a referral's row is replaced by the latest.
        Raises `FencedError` (nothing written) if an epoch of `batch.epochs` was superseded.
        """
        if not batch:
            return
        events = [_event_values(row) for row in batch.events]
        # One row per referral (the last given wins): an upsert cannot touch a row twice.
        latest = {_clean(row.referral_id): row for row in batch.clocks}
        rules = self.rules
        clocks = [_clock_values(row, rules) for row in latest.values()]
        positions = sorted(batch.positions.items())
        epochs = sorted(((_clean(t), p), e) for (t, p), e in batch.epochs.items())
        await asyncio.get_running_loop().run_in_executor(
            self._writer, self._write_blocking, events, clocks, positions, epochs
        )

    def _write_blocking(
        self,
        events: list[tuple[Any, ...]],
        clocks: list[tuple[Any, ...]],
        positions: list[tuple[tuple[str, int], int]],
        epochs: list[tuple[tuple[str, int], int]],
    ) -> None:
        """`write`'s transaction, on the writer thread and its connection (reconnecting)."""
        with wrapped("writing a batch"):
            conn = self._writer_conn
            if conn is None or unusable(conn):
                if conn is not None:
                    conn.close()
                self._writer_conn = None
                conn = self._writer_conn = _writer_connect(self._url)
            with conn.transaction(), conn.cursor() as cursor:
                # Staging first: COPY into this session's temporary tables locks nothing that
                # another worker waits for, however long the client takes to send the rows.
                if events:
                    with cursor.copy(_COPY_EVENTS) as copy:
                        for values in events:
                            copy.write_row(values)
                if clocks:
                    with cursor.copy(_COPY_CLOCKS) as copy:
                        for values in clocks:
                            copy.write_row(values)
                if epochs:
                    _check_epochs(cursor, epochs)
                if events:
                    cursor.execute(_INSERT_EVENTS)
                if clocks:
                    cursor.execute(_INSERT_CLOCKS)
                    # Delivered on commit, once per transaction: the board's change feed.
                    cursor.execute("NOTIFY " + CLOCKS_CHANNEL)
                if positions:
                    cursor.execute(
                        _UPSERT_POSITIONS,
                        (
                            [_clean(topic) for (topic, _), _ in positions],
                            [partition for (_, partition), _ in positions],
                            [offset for _, offset in positions],
                        ),
                    )
                    if cursor.rowcount != len(positions):
                        raise ServiceError(
                            "refusing to move a stored consumer position backwards"
                            f" ({len(positions) - cursor.rowcount} of {positions})"
                        )

    # -- reads for consoles and tests ----------------------------------------------------------

    async def counts(self, now: int | None = None) -> Counts:
        """Open clocks by (region, state), and type-05 clocks stopped/met since local midnight.

        `now`: epoch seconds (default: the wall clock); "today" is its local date under the
        store's rules.
        """
        if now is None:
            now = int(time.time())
        midnight = self.rules.local_instant(self.rules.local_date(now), _MIDNIGHT)
        async with self._session("counting clocks") as conn:
            cursor = await conn.execute(
                "SELECT coalesce(region, 'unknown'), state, count(*),"
                " count(*) FILTER (WHERE clock_type = %s) FROM clocks"
                " WHERE is_open GROUP BY 1, 2",
                (CLOCK_UCR,),
            )
            open_clocks: dict[tuple[str, str], int] = {}
            breached_ucr: dict[str, int] = {}
            pending = 0
            for region, state, count, ucr in await cursor.fetchall():
                if state == PENDING:
                    pending += int(count)
                else:
                    open_clocks[(region, state)] = int(count)
                    if state == BREACHED and ucr:
                        breached_ucr[region] = int(ucr)
            cursor = await conn.execute(
                "SELECT coalesce(region, 'unknown'), count(*),"
                " count(*) FILTER (WHERE state = 'met') FROM clocks"
                " WHERE clock_type = %s AND state IN ('met', 'not_met')"
                " AND clock_stop >= to_timestamp(%s) AND clock_stop <= to_timestamp(%s)"
                " GROUP BY 1",
                (CLOCK_UCR, midnight, now),
            )
            stopped: dict[str, int] = {}
            met: dict[str, int] = {}
            for region, stopped_count, met_count in await cursor.fetchall():
                stopped[region] = int(stopped_count)
                met[region] = int(met_count)
            cursor = await conn.execute("SELECT count(*) FROM events")
            row = await cursor.fetchone()
            events = int(row[0]) if row is not None else 0
        return Counts(open_clocks, pending, stopped, met, events, breached_ucr)

    async def outcomes(self) -> list[Outcome]:
        """Every referral's stored outcome, by referral id (CONTRACT section 2 order).

        Referrals still pending (no `referral.received`) have no outcome and are left out.
        """
        async with self._session("reading outcomes") as conn:
            cursor = await conn.execute(
                "SELECT " + _OUTCOME_COLUMNS + " FROM clocks WHERE state <> %s"
                ' ORDER BY referral_id COLLATE "C"',
                (PENDING,),
            )
            rows = await cursor.fetchall()
        return [
            Outcome(
                rid, pathway, clock_type, region, icb, provider,
                _epoch(start), _epoch(stop), wait, state, reason,
            )
            for rid, pathway, clock_type, region, icb, provider, start, stop, wait, state, reason
            in rows
        ]  # fmt: skip

    async def outcome_rows(self) -> list[list[str]]:
        """`outcomes()` as CONTRACT section 2 CSV rows."""
        return [outcome.to_row() for outcome in await self.outcomes()]

    # -- internals -----------------------------------------------------------------------------

    @asynccontextmanager
    async def _session(self, what: str) -> AsyncIterator[Connection]:
        """The live connection (reconnecting if it was lost), psycopg errors wrapped."""
        async with self._lock:
            if unusable(self._conn):
                await self._conn.close()
                self._conn = await connect_async(self._url)
            try:
                yield self._conn
            except psycopg.Error as exc:
                raise wrap_error(exc, what) from exc


def _check_epochs(
    cursor: psycopg.Cursor[tuple[Any, ...]], epochs: list[tuple[tuple[str, int], int]]
) -> None:
    """Lock the lease rows of `epochs` and raise `FencedError` if any has moved on."""
    cursor.execute(_LOCK_LEASES, ([topic for (topic, _), _ in epochs], [p for (_, p), _ in epochs]))
    stored = {(str(t), int(p)): int(e) for t, p, e in cursor.fetchall()}
    lost = {key: held for key, held in epochs if stored.get(key) != held}
    if lost:
        detail = ", ".join(
            f"{topic}[{partition}] epoch {held} < {stored.get((topic, partition), 'none')}"
            for (topic, partition), held in sorted(lost.items())
        )
        raise FencedError(
            f"batch refused: partitions taken over by another worker ({detail})",
            frozenset(lost),
        )


# -- row building ------------------------------------------------------------------------------


def _event_values(row: AuditRow) -> tuple[Any, ...]:
    return (
        _clean(row.event_id),
        _clean(row.referral_id),
        _clean(row.type),
        row.event_time,
        _clean(row.source),
        row.kafka_partition,
        row.kafka_offset,
        document if isinstance(document := row.document, str) else _json(document),
    )


def _clock_values(row: ClockRow, rules: Rules) -> tuple[Any, ...]:
    """The `cw_clocks_in` columns of a row: CSDS columns from the outcome and the state."""
    received = row.state.get("received")
    received_at = int(received[0]) if received else None
    outcome = row.outcome
    if outcome is None:
        return (
            _clean(row.referral_id), row.kafka_partition, None, None, None, None, None,
            received_at, None, None, None, None, None, None,
            PENDING, None, True, row.contacts, row.next_change_at, _json(row.state),
        )  # fmt: skip
    start, stop, wait = outcome.clock_start, outcome.clock_stop, outcome.wait_seconds
    minutes = wait // 60 if wait is not None else None
    nights = (
        (rules.local_date(stop) - rules.local_date(start)).days
        if start is not None and stop is not None
        else None
    )
    breach_at = (
        Clock.thresholds(rules, outcome.clock_type, start)[1]
        if start is not None and outcome.clock_type in (CLOCK_UCR, CLOCK_REABLEMENT)
        else None
    )
    return (
        _clean(row.referral_id), row.kafka_partition, _clean(outcome.pathway),
        outcome.clock_type, _clean(outcome.region), _clean(outcome.icb),
        _clean(outcome.provider), received_at, start, stop, wait, minutes, nights, breach_at,
        outcome.state, outcome.exclusion_reason, outcome.state in OPEN_STATES, row.contacts,
        row.next_change_at, _json(row.state),
    )  # fmt: skip


_MIDNIGHT: Final = datetime.min.time()
# Characters PostgreSQL text cannot hold (NUL) or UTF-8 cannot encode (lone surrogates).
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")
# In ASCII-only JSON, those appear as these escapes (jsonb also refuses \u0000).
_UNSTORABLE_ESCAPE: Final = re.compile(r"\\u(?:0000|d[89a-f])")


def _clean(text: str) -> str:
    """`text` with unstorable characters replaced by U+FFFD (fast when there are none)."""
    if text.isascii() and "\x00" not in text:
        return text
    return _UNSTORABLE.sub("\ufffd", text)


def _json(value: dict[str, Any]) -> str:
    """Compact JSON text for a jsonb column, unstorable characters replaced."""
    text = dumps_text(value)
    # NUL is written as \u0000; a lone surrogate, which orjson refuses, as \udXXX by `json`.
    if "\\u" in text and _UNSTORABLE_ESCAPE.search(text):
        # Rare: re-encode from a cleaned tree (a regex on the text could split an escaped
        # backslash from what follows it).
        text = dumps_text(_clean_tree(value))
    return text


def _clean_tree(value: Any) -> Any:
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {_clean(str(k)): _clean_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_tree(v) for v in value]
    return value


def _epoch(instant: datetime | None) -> int | None:
    return int(instant.timestamp()) if instant is not None else None


def _writer_connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    """The writer thread's connection, with its staging tables."""
    conn = connect_sync(url)
    with wrapped("creating the staging tables"), conn.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
            (f"{STALLED_WRITER_TIMEOUT_MS}ms",),
        )
        for statement in _STAGING:
            cursor.execute(statement)
    return conn
