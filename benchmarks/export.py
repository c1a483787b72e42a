"""Export benchmark: `crisiswatch export` over a national year of data in PostgreSQL.

    .venv/bin/python -m benchmarks.export [--database-url URL] [--days 365] [--repeat 3]

Loads (once; a database that already holds the year is reused) a year of England-shaped events
from the simulator at England's real rate (about 4 million events, 850,000 referrals): every
event through the codec and the engine, the audit rows and then every referral's clock written
by the worker's own `Store.write` in large batches. Then times exports of a week and a month
(best of --repeat runs): management information, publication mode, and with --detail.

Default database: `crisiswatch_bench_export` on the test server (CRISISWATCH_TEST_POSTGRES or
postgres@127.0.0.1:5432), created if missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from benchmarks.report import report
from consumers.exports.writer import export_period
from consumers.store import AuditRow, Batch, Store, clock_row, migrate, with_database
from streams.codec import Codec, Rejection
from streams.engine import Engine, Rules
from streams.period import parse_month, week
from streams.pseudonym import Pseudonymiser
from streams.simulation import SimulationConfig, simulate

LONDON = ZoneInfo("Europe/London")
START = datetime(2025, 4, 1, tzinfo=LONDON)  # a financial year, like the reference figures
SERVER = os.environ.get(
    "CRISISWATCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BATCH = 50_000


def database(name: str) -> str:
    with psycopg.connect(SERVER, autocommit=True) as admin:
        if (
            admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            is None
        ):
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(SERVER, name)


def loaded(url: str) -> dict[str, Any] | None:
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('bench_meta')").fetchone()
        if exists is None or exists[0] is None:
            return None
        row = conn.execute("SELECT meta FROM bench_meta").fetchone()
        return None if row is None else dict(row[0])


def load(url: str, days: int, rules: Rules) -> dict[str, Any]:
    """The simulated year through codec and engine into PostgreSQL via Store.write."""
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE events, clocks, consumer_positions")
        conn.execute("DROP TABLE IF EXISTS bench_meta")
    codec = Codec(Pseudonymiser(b"benchmark-key-not-a-secret"))
    engine = Engine(rules)
    config = SimulationConfig(start=START, duration=timedelta(days=days), seed=2025)
    began = time.perf_counter()
    counts = {"lines": 0, "events": 0}
    referral_ids: set[str] = set()

    async def write() -> None:
        async with await Store.connect(url, rules=rules) as store:
            audit: list[AuditRow] = []
            for line in simulate(config):
                counts["lines"] += 1
                decoded = codec.decode_record(line.line)
                if isinstance(decoded, Rejection):
                    continue
                event, document, _text = decoded
                if engine.ingest(event) is None:
                    continue  # a duplicate id (R8): stored once
                referral_ids.add(event.referral_id)
                audit.append(
                    AuditRow(
                        event.id, event.referral_id, event.type, event.time,
                        str(document["source"]), None, None, document,
                    )
                )  # fmt: skip
                if len(audit) >= BATCH:
                    await store.write(Batch(events=audit))
                    counts["events"] += len(audit)
                    audit = []
                    _progress(counts, began)
            await store.write(Batch(events=audit))
            counts["events"] += len(audit)
            now = engine.watermark or 0
            rows = []
            for referral_id in sorted(referral_ids):
                clock = engine.clock(referral_id)
                assert clock is not None
                outcome, next_change = clock.evaluate(rules, now)
                rows.append(clock_row(clock, outcome, next_change, None))
                if len(rows) >= BATCH:
                    await store.write(Batch(clocks=rows))
                    rows = []
            await store.write(Batch(clocks=rows))

    asyncio.run(write())
    load_s = time.perf_counter() - began
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE events")
        conn.execute("VACUUM ANALYZE clocks")
        clocks = conn.execute("SELECT count(*) FROM clocks").fetchone()
        referrals = clocks[0] if clocks is not None else 0
        meta = {
            "days": days,
            "start": START.isoformat(),
            "lines": counts["lines"],
            "events": counts["events"],
            "referrals": referrals,
            "load_seconds": round(load_s, 1),
        }
        conn.execute("CREATE TABLE bench_meta (meta jsonb)")
        conn.execute("INSERT INTO bench_meta VALUES (%s)", (json.dumps(meta),))
    return meta


def _progress(counts: dict[str, int], began: float) -> None:
    if counts["events"] % 500_000 < BATCH:
        rate = counts["events"] / (time.perf_counter() - began)
        print(f"  loaded {counts['events']:,} events ({rate:,.0f}/s)", flush=True)


def timed(url: str, rules: Rules, repeat: int, **options: Any) -> tuple[float, float]:
    """Best wall-clock seconds of `repeat` exports (total, query part)."""
    best = (float("inf"), float("inf"))
    with tempfile.TemporaryDirectory() as out:
        for _ in range(repeat):
            result = export_period(url, out=Path(out), rules=rules, **options)
            best = min(best, (result.seconds, result.query_seconds))
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reload", action="store_true", help="load the year again")
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    args = parser.parse_args(argv)

    rules = Rules()
    url = args.database_url or database("crisiswatch_bench_export")
    meta = None if args.reload else loaded(url)
    if meta is None or meta["days"] != args.days:
        print(f"loading {args.days} days of simulated England into PostgreSQL...", flush=True)
        meta = load(url, args.days, rules)
    middle = START.date() + timedelta(days=args.days // 2)
    the_week = week(middle, LONDON)
    the_month = parse_month(f"{middle:%Y-%m}", LONDON)
    runs: dict[str, dict[str, Any]] = {
        f"week {the_week.label}": {"period": the_week},
        f"week {the_week.label} --publication": {"period": the_week, "publication": True},
        f"week {the_week.label} --detail": {"period": the_week, "detail": True},
        f"month {the_month.label}": {"period": the_month},
        f"month {the_month.label} --detail": {"period": the_month, "detail": True},
    }
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        **meta,
    }
    for name, options in runs.items():
        total, query = timed(url, rules, args.repeat, **options)
        results[f"{name}: seconds"] = round(total, 2)
        results[f"{name}: query seconds"] = round(query, 2)
    report(results, args.json)


if __name__ == "__main__":
    main()
