"""The PostgreSQL store against a real server (CONTRACT section 2 through the database).

Needs PostgreSQL at CRISISWATCH_TEST_POSTGRES (default: postgres@127.0.0.1:5432, trust auth).
Each session creates its own databases (`cw_test_<random>...`) and drops them at the end. An
unreachable server is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import csv
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from consumers.store import (
    PENDING,
    AuditRow,
    Batch,
    ClockRow,
    Store,
    check_schema,
    clock_row,
    is_transient,
    migrate,
    migrations,
)
from streams.codec import Codec, Rejection
from streams.engine import Clock, Engine, Event, Rules
from streams.errors import FencedError, ServiceError, ServiceUnavailableError
from tests.factory import at, cancelled, contact, received, triaged
from tests.support import crisiswatch

pytestmark = pytest.mark.integration

ALL_MIGRATIONS = [m.name for m in migrations()]
RULES = Rules()
EV = "referral.received"
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# -- databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def migrated(new_database: Callable[[], str]) -> str:
    url = new_database()
    assert migrate(url) == ALL_MIGRATIONS
    return url


@pytest.fixture
def db(migrated: str) -> str:
    """The session's migrated database, emptied (TRUNCATE: the owner may; others may not)."""
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("TRUNCATE events, clocks, consumer_positions, partition_leases")
    return migrated


def query(url: str, text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(text.encode(), params).fetchall()


# -- helpers -----------------------------------------------------------------------------------


def audit(event: Event, partition: int | None = 0, offset: int | None = None) -> AuditRow:
    document = {
        "specversion": "1.0",
        "id": event.id,
        "source": "urn:nhs:ods:RY7",
        "type": event.type,
        "time": "2026-02-03T14:00:00Z",
        "data": {"referral_id": event.referral_id, "extra": {"kept": [1, 2]}},
    }
    return AuditRow(
        event.id, event.referral_id, event.type, event.time, "urn:nhs:ods:RY7",
        partition, offset, document,
    )  # fmt: skip


def judged(events: list[Event], now: int, partition: int | None = 0) -> ClockRow:
    clock = Clock(events[0].referral_id)
    for event in events:
        clock.merge(event)
    outcome, next_change = clock.evaluate(RULES, now)
    return clock_row(clock, outcome, next_change, partition)


# -- migrations --------------------------------------------------------------------------------


def test_migrate_is_idempotent(new_database: Callable[[], str]) -> None:
    url = new_database()
    assert migrate(url) == ["0001_initial", "0002_reader", "0003_partition_leases"]
    assert migrate(url) == []
    rows = query(url, "SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows == [(1, "0001_initial"), (2, "0002_reader"), (3, "0003_partition_leases")]


def test_a_newer_schema_is_accepted_only_where_it_lets_older_workers_run(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    migrate(url)
    assert check_schema(url) == 3
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (4, 'a', now(), 3)")
    assert check_schema(url) == 4  # additive: this release may run on it
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (5, 'b')")  # no word
    with pytest.raises(ServiceError, match=r"newer than this worker .* migration 5 "):
        check_schema(url)


def test_migrate_from_two_threads_at_once(new_database: Callable[[], str]) -> None:
    url = new_database()
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        try:
            barrier.wait()
            results.append(migrate(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # The advisory lock: one thread applied everything, the other found nothing to do.
    assert sorted(results, key=len) == [[], ALL_MIGRATIONS]
    assert query(url, "SELECT count(*) FROM schema_migrations") == [(len(ALL_MIGRATIONS),)]


# -- writes ------------------------------------------------------------------------------------


def test_duplicate_event_ids_give_one_audit_row(db: str) -> None:
    first = received("R-DUP", "2026-02-03T14:00:00Z", id="ev-1")
    again = received("R-DUP", "2026-02-03T14:05:00Z", id="ev-1")  # same id: a redelivery

    async def scenario() -> None:
        async with await Store.connect(db) as store:
            await store.write(Batch(events=[audit(first, 0, 10), audit(again, 0, 11)]))
            await store.write(Batch(events=[audit(again, 1, 12)]))  # and in a later batch

    run(scenario())
    rows = query(
        db,
        "SELECT event_id, referral_id, type, event_time, source, kafka_partition,"
        " kafka_offset, document FROM events",
    )
    assert len(rows) == 1
    event_id, referral_id, kind, event_time, source, partition, offset, document = rows[0]
    # The first write of an id wins; later copies are ignored.
    assert (event_id, referral_id, kind, partition, offset) == ("ev-1", "R-DUP", EV, 0, 10)
    assert int(event_time.timestamp()) == at("2026-02-03T14:00:00Z")
    assert source == "urn:nhs:ods:RY7"
    assert document["data"]["extra"] == {"kept": [1, 2]}  # unknown fields are kept


def test_the_first_copy_of_an_id_wins_in_a_large_batch(db: str) -> None:
    # COPY does not keep rows in input order on disk (a row too big for what is left of a page
    # goes to the next page; a smaller row after it may still fill the gap), so without an
    # ORDER BY the later copy of a redelivered event could be the one stored: its offset, and
    # after a restart (other batch boundaries) the other one. Here each event comes again five
    # messages later, as the simulator's duplicates do, with documents of varied sizes.
    rows: list[AuditRow] = []
    first: dict[str, int] = {}
    for number in range(600):
        event = received(f"R-{number}", "2026-02-03T14:00:00Z", id=f"ev-{number}")
        row = audit(event, 0)
        document = {**row.document, "pad": "x" * (100 + number * 37 % 500)}
        first[event.id] = len(rows)
        rows.append(_at_offset(row, len(rows), document))
        if number >= 5:
            again = rows[first[f"ev-{number - 5}"]]
            rows.append(_at_offset(again, len(rows), again.document))
    run(_write(db, Batch(events=rows)))
    assert dict(query(db, "SELECT event_id, kafka_offset FROM events")) == first


def _at_offset(row: AuditRow, offset: int, document: dict[str, Any]) -> AuditRow:
    return AuditRow(
        row.event_id, row.referral_id, row.type, row.event_time, row.source,
        row.kafka_partition, offset, document,
    )  # fmt: skip


def test_clock_upsert_latest_wins_and_positions(db: str) -> None:
    start = "2026-02-03T14:00:00Z"
    waiting = judged([received("R-UP", start)], at("2026-02-03T14:30:00Z"), partition=3)
    met = judged(
        [received("R-UP", start), contact("R-UP", "2026-02-03T15:10:00Z")],
        at("2026-02-03T15:10:00Z"),
        partition=3,
    )

    async def scenario() -> dict[int, int]:
        async with await Store.connect(db) as store:
            await store.write(Batch(clocks=[waiting], positions={("referral-events", 3): 5}))
            await store.write(
                Batch(
                    clocks=[met],
                    positions={("referral-events", 3): 9, ("referral-events", 4): 1},
                )
            )
            return await store.positions("referral-events", [3, 4, 5])

    assert run(scenario()) == {3: 9, 4: 1}  # partition 5 never written: absent
    rows = query(
        db,
        "SELECT state, is_open, wait_seconds, wait_minutes, contacts, next_change_at"
        " FROM clocks WHERE referral_id = 'R-UP'",
    )
    assert rows == [("met", False, 4200, 70, 1, None)]


def test_events_are_append_only(db: str) -> None:
    run(_write(db, Batch(events=[audit(received("R-AO", "2026-02-03T14:00:00Z", id="ao-1"))])))
    with psycopg.connect(db, autocommit=True) as conn:
        for statement in (
            "UPDATE events SET source = 'tampered'",
            "DELETE FROM events WHERE event_id = 'ao-1'",
            "UPDATE events SET source = 'x' WHERE false",  # refused even when nothing matches
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement.encode())
        assert conn.execute("SELECT source FROM events").fetchall() == [("urn:nhs:ods:RY7",)]


async def _write(url: str, batch: Batch) -> None:
    async with await Store.connect(url) as store:
        await store.write(batch)


def test_restore_helpers_return_what_was_written(db: str) -> None:
    now = at("2026-02-03T14:30:00Z")
    open_a = judged([received("R-OPEN-A", "2026-02-03T14:00:00Z")], now, partition=0)
    open_b = judged([received("R-OPEN-B", "2026-02-03T13:00:00Z")], now, partition=1)
    closed = judged(
        [received("R-CLOSED", "2026-02-03T13:00:00Z"), contact("R-CLOSED", "2026-02-03T13:30Z")],
        now,
        partition=0,
    )
    pending = judged([contact("R-PENDING", "2026-02-03T14:10:00Z")], now, partition=0)
    assert pending.outcome is None

    async def scenario() -> tuple[Any, Any, Any]:
        async with await Store.connect(db) as store:
            await store.write(Batch(clocks=[open_a, open_b, closed, pending]))
            return (
                await store.open_clock_states([0]),
                await store.open_clock_states([0, 1]),
                await store.clock_states(["R-CLOSED", "R-OPEN-B", "R-NOWHERE"]),
            )

    partition_0, both, by_id = run(scenario())
    # Open and pending clocks of the partitions asked for; closed ones are not restored.
    assert partition_0 == [(0, open_a.state), (0, pending.state)]
    assert sorted(both, key=lambda item: item[1]["referral_id"]) == [
        (0, open_a.state), (1, open_b.state), (0, pending.state),
    ]  # fmt: skip
    assert by_id == {"R-CLOSED": closed.state, "R-OPEN-B": open_b.state}
    # The state restores into an engine as it was.
    engine = Engine(RULES)
    for _, state in both:
        engine.load(state)
    assert engine.clock("R-OPEN-A") is not None
    assert engine.clock("R-OPEN-A").to_state() == open_a.state  # type: ignore[union-attr]
    assert query(db, "SELECT state, is_open FROM clocks WHERE referral_id = 'R-PENDING'") == [
        (PENDING, True)
    ]


def test_csds_columns(db: str) -> None:
    # A 2-day clock received on Friday evening, stopped on Sunday: two local midnights.
    two_day = judged(
        [
            received("R-2D", "2026-02-06T19:00:00Z", "reablement_2d", id="2d-1"),
            contact("R-2D", "2026-02-08T09:30:45Z", id="2d-2"),
        ],
        at("2026-02-08T10:00:00Z"),
    )
    # An open 2-hour clock: at risk from 90 minutes, breached from 120:01.
    open_2h = judged([received("R-2H", "2026-02-08T08:00:00Z")], at("2026-02-08T09:40:00Z"))
    excluded = judged(
        [
            received("R-07", "2026-02-08T08:00:00Z"),
            triaged("R-07", "2026-02-08T08:10:00Z", subject=False, reason="other"),
        ],
        at("2026-02-08T09:40:00Z"),
    )
    gone = judged(
        [received("R-CAN", "2026-02-08T08:00:00Z"), cancelled("R-CAN", "2026-02-08T08:05Z")],
        at("2026-02-08T09:40:00Z"),
    )
    run(_write(db, Batch(clocks=[two_day, open_2h, excluded, gone])))
    rows = query(
        db,
        "SELECT referral_id, pathway, clock_type, state, is_open, wait_seconds, wait_minutes,"
        " wait_nights, extract(epoch FROM referral_received_at)::bigint,"
        " extract(epoch FROM breach_at)::bigint, extract(epoch FROM next_change_at)::bigint,"
        " exclusion_reason FROM clocks ORDER BY referral_id",
    )
    assert rows == [
        ("R-07", "ucr_2h", "07", "excluded", False, None, None, None,
         at("2026-02-08T08:00:00Z"), None, None, "other"),
        ("R-2D", "reablement_2d", "06", "met", False, 138645, 2310, 2,
         at("2026-02-06T19:00:00Z"), at("2026-02-09T00:00:00Z"), None, None),
        ("R-2H", "ucr_2h", "05", "at_risk", True, None, None, None,
         at("2026-02-08T08:00:00Z"), at("2026-02-08T10:00:01Z"), at("2026-02-08T10:00:01Z"),
         None),
        ("R-CAN", "ucr_2h", None, "cancelled", False, None, None, None,
         at("2026-02-08T08:00:00Z"), None, None, None),
    ]  # fmt: skip


def test_text_postgres_cannot_store_is_replaced(db: str) -> None:
    event = Event("nul-1", "referral.cancelled", at("2026-02-03T14:00:00Z"), "R-\ud800", reason="x")
    row = AuditRow(
        event.id, event.referral_id, event.type, event.time, "urn:\x00bad", None, None,
        {"id": "nul-1", "data": {"x": "a\x00b", "y": "\ud800", "z": "\\u0000 stays"}},
    )  # fmt: skip

    async def scenario() -> Any:
        async with await Store.connect(db) as store:
            await store.write(Batch(events=[row]))
            return await store.clock_states(["R-\ud800"])

    assert run(scenario()) == {}
    [(referral_id, source, document)] = query(
        db, "SELECT referral_id, source, document FROM events"
    )
    assert (referral_id, source) == ("R-\ufffd", "urn:\ufffdbad")
    assert document["data"] == {"x": "a\ufffdb", "y": "\ufffd", "z": "\\u0000 stays"}


def test_a_large_batch_is_fast(db: str) -> None:
    size = 20_000
    base = at("2026-02-03T08:00:00Z")
    rows: list[AuditRow] = []
    clocks: list[ClockRow] = []
    for i in range(size):
        rid = f"R-BULK-{i:06d}"
        events = [received(rid, base + i, id=f"b-{i}-r"), contact(rid, base + i + 3600 + i % 7200)]
        rows.extend(audit(event, i % 12, i) for event in events)
        clocks.append(judged(events, base + size + 10_000, partition=i % 12))
    batch = Batch(
        events=rows, clocks=clocks, positions={("referral-events", p): size for p in range(12)}
    )

    async def scenario() -> tuple[float, float]:
        async with await Store.connect(db) as store:
            started = time.perf_counter()
            await store.write(batch)
            first = time.perf_counter() - started
            started = time.perf_counter()
            await store.write(batch)  # all conflicts: events ignored, clocks updated
            return first, time.perf_counter() - started

    first, second = run(scenario())
    print(
        f"\n{len(rows)} events + {len(clocks)} clocks: insert {first:.2f} s"
        f" ({(len(rows) + len(clocks)) / first:,.0f} rows/s), upsert again {second:.2f} s"
        f" ({(len(rows) + len(clocks)) / second:,.0f} rows/s)"
    )
    assert query(db, "SELECT count(*) FROM events") == [(2 * size,)]
    assert query(db, "SELECT count(*) FROM clocks") == [(size,)]
    # Generous sanity bounds, not a benchmark (shared CI machines vary).
    assert first < 30
    assert second < 30


# -- reads -------------------------------------------------------------------------------------


def test_counts(db: str) -> None:
    now = at("2026-07-01T12:00:00Z")  # 13:00 BST: "today" began at 2026-06-30T23:00:00Z
    clocks = [
        judged([received("C-MET", "2026-07-01T08:00:00Z"), contact("C-MET", "2026-07-01T09:00Z")], now),
        judged([received("C-LATE", "2026-07-01T06:00:00Z"), contact("C-LATE", "2026-07-01T09:00Z")], now),
        # Stopped just after local midnight (00:30 BST): today; before it (23:30 BST): not.
        judged([received("C-EARLY", "2026-06-30T23:00:00Z"), contact("C-EARLY", "2026-06-30T23:30Z")], now),
        judged([received("C-YDAY", "2026-06-30T22:00:00Z"), contact("C-YDAY", "2026-06-30T22:30Z")], now),
        judged([received("C-OPEN", "2026-07-01T11:50:00Z")], now),
        judged([received("C-BREACH", "2026-07-01T08:00:00Z", region="Y56")], now),
        judged([contact("C-PEND", "2026-07-01T11:00:00Z")], now),
    ]  # fmt: skip

    async def scenario() -> Any:
        async with await Store.connect(db) as store:
            await store.write(Batch(clocks=clocks))
            return await store.counts(now)

    counts = run(scenario())
    assert counts.open_clocks == {("Y62", "waiting"): 1, ("Y56", "breached"): 1}
    assert counts.pending == 1
    assert counts.stopped_in(None) == (3, 2)
    assert sum(counts.stopped_today.values()) == 3
    assert counts.pct_met_today == pytest.approx(200 / 3)


def test_demo_summary_counts_today_in_the_configured_time_zone(db: str) -> None:
    """The demo's console is the store's counts under the worker's rules: with another
    CRISISWATCH_TIMEZONE, "today" is that zone's day, not London's."""
    from consumers.local.demo import summary

    now = at("2026-07-01T12:00:00Z")  # 13:00 in London, 00:00 (2 July) in Auckland
    clocks = [
        # Stopped 09:00Z: 1 July in both zones, but before Auckland's midnight (12:00Z).
        judged([received("C-AM", "2026-07-01T08:00:00Z"), contact("C-AM", "2026-07-01T09:00Z")], now),
        # Stopped 11:59:30Z: today in London; still 1 July (yesterday at 00:00) in Auckland.
        judged([received("C-NOON", "2026-07-01T11:00:00Z"), contact("C-NOON", "2026-07-01T11:59:30Z")], now),
    ]  # fmt: skip
    run(_write(db, Batch(clocks=clocks)))

    def england(table: str) -> list[str]:
        (line,) = [row for row in table.splitlines() if row.startswith("England")]
        return line.split()

    london = england(summary(db, Rules(timezone="Europe/London"), now))
    auckland = england(summary(db, Rules(timezone="Pacific/Auckland"), now + 60))
    # England, waiting, at risk, breached, stopped, % met of stopped, projected % met
    assert london[4:] == ["2", "100.0", "100.0"]
    assert auckland[4:] == ["0", "-", "-"]
    assert "NZST" in summary(db, Rules(timezone="Pacific/Auckland"), now + 60).splitlines()[1]


def test_reader_role_can_select_the_view_but_not_write(db: str) -> None:
    now = at("2026-02-03T14:30:00Z")
    run(_write(db, Batch(clocks=[judged([received("R-VIEW", "2026-02-03T14:00:00Z")], now)])))
    with psycopg.connect(db) as conn:  # one transaction, rolled back at the end
        conn.execute("SET ROLE crisiswatch_reader")
        rows = conn.execute(
            "SELECT referral_id, state, clock_type, minutes_waiting > 0,"
            " extract(epoch FROM deadline)::bigint FROM live_open_clocks"
        ).fetchall()
        assert rows == [("R-VIEW", "waiting", "05", True, at("2026-02-03T16:00:01Z"))]
        conn.execute("SELECT count(*) FROM events")
        conn.execute("SAVEPOINT s")
        for statement in (
            "INSERT INTO clocks (referral_id, state, is_open, engine_state)"
            " VALUES ('x', 'met', false, '{}')",
            "DELETE FROM clocks",
            "SELECT * FROM consumer_positions",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.encode())
            conn.execute("ROLLBACK TO SAVEPOINT s")
        conn.rollback()


def test_golden_outcomes_through_the_database(db: str, shared: Path) -> None:
    """The golden file through codec, engine and store equals the contract's expected CSV."""
    codec = Codec()
    engine = Engine(RULES)
    audit_rows: list[AuditRow] = []
    accepted = 0
    with (shared / "golden" / "events.ndjson").open("rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            decoded = codec.decode_record(raw.rstrip(b"\r\n"))
            if isinstance(decoded, Rejection):
                continue
            event, document, _text = decoded
            audit_rows.append(
                AuditRow(
                    event.id, event.referral_id, event.type, event.time,
                    document["source"], None, None, document,
                )
            )  # fmt: skip
            accepted += engine.ingest(event) is not None
    now = engine.watermark
    assert now is not None
    clock_rows = []
    for referral_id in sorted({row.referral_id for row in audit_rows}):
        clock = engine.clock(referral_id)
        assert clock is not None
        outcome, next_change = clock.evaluate(engine.rules, now)
        clock_rows.append(clock_row(clock, outcome, next_change, None))

    async def scenario() -> list[list[str]]:
        async with await Store.connect(db, rules=engine.rules) as store:
            await store.write(Batch(events=audit_rows, clocks=clock_rows))
            return await store.outcome_rows()

    stored = run(scenario())
    with (shared / "golden" / "expected_outcomes.csv").open(newline="", encoding="utf-8") as f:
        expected = list(csv.reader(f))[1:]
    assert stored == expected
    assert query(db, "SELECT count(*) FROM events") == [(accepted,)]  # duplicates: once
    # The same rows through the command line, byte for byte the expected file.
    printed = subprocess.run(
        [crisiswatch(), "db", "outcomes", "--database-url", db],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    assert printed.stdout == (shared / "golden" / "expected_outcomes.csv").read_bytes()


# -- the fence ---------------------------------------------------------------------------------


def test_a_superseded_epoch_is_refused_and_writes_nothing(db: str) -> None:
    now = at("2026-02-03T15:00:00Z")
    first = judged([received("R-F1", "2026-02-03T14:00:00Z", id="f-1")], now, partition=3)
    later = judged(
        [
            received("R-F1", "2026-02-03T14:00:00Z", id="f-1"),
            contact("R-F1", "2026-02-03T14:30:00Z", id="f-2"),
        ],
        now,
        partition=3,
    )
    key = ("referral-events", 3)

    async def scenario() -> None:
        async with await Store.connect(db) as a, await Store.connect(db) as b:
            assert await a.acquire("referral-events", [3, 4], "a") == {3: 1, 4: 1}
            await a.write(
                Batch(
                    [audit(received("R-F1", "2026-02-03T14:00:00Z", id="f-1"), 3, 0)],
                    [first],
                    {key: 1},
                    {key: 1},
                )
            )
            assert await b.acquire("referral-events", [3], "b") == {3: 2}
            await b.write(Batch([], [later], {key: 2}, {key: 2}))
            with pytest.raises(FencedError) as refused:
                # A's stale view of R-F1 and an older position, under its old epoch; and its
                # partition 4, still its own: the whole transaction is refused.
                await a.write(
                    Batch(
                        [audit(contact("R-F1", "2026-02-03T14:40:00Z", id="f-3"), 3, 1)],
                        [first],
                        {key: 2, ("referral-events", 4): 7},
                        {key: 1, ("referral-events", 4): 1},
                    )
                )
            assert refused.value.partitions == frozenset({key})
            assert not is_transient(refused.value)

    run(scenario())
    assert query(
        db, "SELECT topic, kafka_partition, epoch, owner FROM partition_leases ORDER BY 2"
    ) == [
        ("referral-events", 3, 2, "b"),
        ("referral-events", 4, 1, "a"),
    ]
    assert query(db, "SELECT kafka_partition, next_offset FROM consumer_positions") == [(3, 2)]
    assert query(db, "SELECT event_id FROM events") == [("f-1",)]
    assert query(db, "SELECT contacts FROM clocks") == [(1,)]


def test_newest_event_time_of_partitions(db: str) -> None:
    early = received("R-N1", "2026-02-03T14:00:00Z", id="n-1")
    late = received("R-N2", "2026-02-03T15:00:00Z", id="n-2")

    async def scenario() -> None:
        async with await Store.connect(db) as store:
            assert await store.newest_event_time([0, 1]) is None
            await store.write(Batch(events=[audit(early, 0, 0), audit(late, 1, 0)]))
            assert await store.newest_event_time([0]) == early.time
            assert await store.newest_event_time([0, 1]) == late.time
            assert await store.newest_event_time([2]) is None

    run(scenario())


def test_a_position_never_moves_backwards(db: str) -> None:
    key = ("referral-events", 0)

    async def scenario() -> None:
        async with await Store.connect(db) as store:
            await store.write(Batch(positions={key: 10}))
            await store.write(Batch(positions={key: 10}))  # a retried commit: the same
            with pytest.raises(ServiceError, match="backwards"):
                await store.write(Batch(positions={key: 9}))

    run(scenario())
    assert query(db, "SELECT next_offset FROM consumer_positions") == [(10,)]


def test_a_new_owner_waits_for_the_old_owners_transaction(db: str) -> None:
    """`acquire` queues behind a batch transaction holding the lease row, then wins."""
    key = ("referral-events", 5)

    async def scenario() -> None:
        async with await Store.connect(db) as a, await Store.connect(db) as b:
            await a.acquire("referral-events", [5], "a")
            with psycopg.connect(db, autocommit=True) as holder:
                with holder.transaction():
                    holder.execute(
                        "SELECT * FROM partition_leases WHERE kafka_partition = 5 FOR SHARE"
                    )
                    waiting = asyncio.create_task(b.acquire("referral-events", [5], "b"))
                    await asyncio.sleep(0.5)
                    assert not waiting.done()
                assert await asyncio.wait_for(waiting, 10) == {5: 2}
            with pytest.raises(FencedError):
                await a.write(Batch(positions={key: 1}, epochs={key: 1}))

    run(scenario())


# -- errors ------------------------------------------------------------------------------------


def test_unreachable_server_is_one_clear_line_without_the_password() -> None:
    url = "postgresql://crisis:s3cret-pw@127.0.0.1:1/nowhere"
    with pytest.raises(ServiceUnavailableError) as caught:
        run(Store.connect(url))
    message = str(caught.value)
    assert "\n" not in message
    assert "s3cret" not in message
    assert message.startswith("cannot connect to PostgreSQL at crisis@127.0.0.1:1/nowhere")
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    assert is_transient(caught.value)
    with pytest.raises(ServiceUnavailableError):
        migrate(url)


def test_a_connection_ended_while_idle_is_replaced_before_use(db: str) -> None:
    # PostgreSQL restarted (or an administrator ended the sessions) while the store's
    # connections sat idle: the next read and the next write reconnect at once, no error.
    name = f"cw_kill_{secrets.token_hex(4)}"
    url = f"{db} application_name={name}"

    def terminate() -> int:
        rows = query(db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name = %s", (name,))  # fmt: skip
        time.sleep(0.3)  # the server's goodbye reaches the sockets
        return len(rows)

    async def scenario() -> None:
        async with await Store.connect(url) as store:
            await store.positions("referral-events", [0])
            await store.write(Batch(positions={("referral-events", 0): 5}))
            assert terminate() == 2  # the reader and the writer
            assert await store.positions("referral-events", [0]) == {0: 5}
            await store.write(Batch(positions={("referral-events", 0): 6}))
            assert await store.positions("referral-events", [0]) == {0: 6}

    run(scenario())


def test_a_connection_lost_mid_statement_is_transient_and_the_store_reconnects(db: str) -> None:
    name = f"cw_kill_{secrets.token_hex(4)}"
    url = f"{db} application_name={name}"

    async def scenario() -> None:
        async with await Store.connect(url) as store:
            await store.positions("referral-events", [0])
            with pytest.raises(ServiceUnavailableError) as caught:
                async with store._session("test") as conn:
                    await conn.execute("SELECT pg_terminate_backend(pg_backend_pid()), pg_sleep(1)")
            assert is_transient(caught.value)
            assert await store.positions("referral-events", [0]) == {}  # reconnected

    run(scenario())


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (psycopg.errors.SerializationFailure("x"), True),  # 40001: retry the transaction
        (psycopg.errors.DeadlockDetected("x"), True),  # 40P01
        (psycopg.errors.AdminShutdown("x"), True),  # 57P01: server restarting
        (psycopg.errors.CannotConnectNow("x"), True),  # 57P03: still starting up
        (psycopg.errors.TooManyConnections("x"), True),  # 53300
        (psycopg.errors.LockNotAvailable("x"), True),  # 55P03: lock_timeout
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg.errors.UniqueViolation("x"), False),  # data: retrying repeats it
        (psycopg.errors.UndefinedTable("x"), False),  # schema not migrated
        (psycopg.errors.InsufficientPrivilege("x"), False),
        (psycopg.errors.RaiseException("x"), False),  # the append-only trigger
        (ServiceError("wrapped"), False),  # no cause: nothing says it may pass
        (ServiceUnavailableError("unreachable"), True),
        (ValueError("not a database error"), False),
    ],
)
def test_is_transient(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient
    wrapped = ServiceError("wrapped")
    wrapped.__cause__ = error
    if isinstance(error, psycopg.Error):
        assert is_transient(wrapped) is transient
