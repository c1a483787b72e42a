"""PostgreSQL sink: the worker's `Store.write` with realistic batches, rows a second.

    .venv/bin/python -m benchmarks.sink [--events 200000] [--database-url URL] [--json FILE]

Takes the first N lines of the cached simulated national file (see `benchmarks.replay`) and
cuts them into batches of the worker's size (2,000 events). Each batch is built as the live
pipeline builds it: events decoded by the codec and merged into an engine; one audit row per
accepted event (the scrubbed CloudEvent as `document`); one clock row per referral the batch
touched, judged at the batch's latest event time (`clock_row`: CSDS columns, outcome and
engine state); and the batch's consumer positions. Building is not timed; each
`Store.write(batch)` (one transaction: COPY to staging tables, upserts, positions) is, into a
fresh migrated database. Rows a second = (audit rows + clock rows) / write seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any, Final

from benchmarks import DEFAULT_SERVER
from benchmarks.replay import SimulatedFile, simulated_file
from benchmarks.report import report
from benchmarks.services import scratch_database
from consumers.store import AuditRow, Batch, ClockRow, Store, clock_row
from streams.codec import Codec, Rejection
from streams.engine import Engine, Rules
from streams.names import EVENTS_TOPIC
from streams.pseudonym import Pseudonymiser

BATCH_SIZE: Final = 2000
PARTITIONS: Final = 4


def batches(path: Path, events: int, batch_size: int) -> list[list[bytes]]:
    """The first `events` lines of `path`, in batches of `batch_size`."""
    out: list[list[bytes]] = [[]]
    with path.open("rb") as source:
        for count, line in enumerate(source):
            if count >= events:
                break
            if len(out[-1]) >= batch_size:
                out.append([])
            out[-1].append(line.rstrip(b"\n"))
    return out


def build(
    lines: list[bytes],
    first_offset: int,
    engine: Engine,
    codec: Codec,
    partition_of: dict[str, int],
) -> Batch:
    """One worker batch from these lines (see module docstring)."""
    audit: list[AuditRow] = []
    touched: dict[str, int] = {}
    offsets = [first_offset] * PARTITIONS
    for line in lines:
        decoded = codec.decode_record(line)
        if isinstance(decoded, Rejection):
            continue
        event, document, _text = decoded
        partition = partition_of.setdefault(event.referral_id, len(partition_of) % PARTITIONS)
        offsets[partition] += 1
        if engine.ingest(event) is None:
            continue  # a duplicate (R8): not stored again
        touched[event.referral_id] = partition
        audit.append(
            AuditRow(
                event.id, event.referral_id, event.type, event.time,
                str(document.get("source", "")), partition, offsets[partition], document,
            )
        )  # fmt: skip
    now = engine.watermark or 0
    clocks: list[ClockRow] = []
    for referral_id, partition in touched.items():
        engine.refresh(referral_id, now)  # the worker publishes the change; here only the row
        clock = engine.clock(referral_id)
        assert clock is not None
        clocks.append(clock_row(clock, clock.published, clock.scheduled, partition))
    positions = {(EVENTS_TOPIC, p): offsets[p] for p in range(PARTITIONS)}
    return Batch(audit, clocks, positions)


async def _write_all(url: str, chunks: list[list[bytes]], rules: Rules) -> dict[str, float]:
    codec = Codec(Pseudonymiser(b"benchmark-key-not-a-secret"))
    engine = Engine(rules)
    partition_of: dict[str, int] = {}
    totals = {"events": 0.0, "audit_rows": 0.0, "clock_rows": 0.0, "seconds": 0.0}
    async with await Store.connect(url, rules=rules) as store:
        offset = 0
        for chunk in chunks:
            batch = build(chunk, offset, engine, codec, partition_of)
            offset += len(chunk)
            began = time.perf_counter()
            await store.write(batch)
            totals["seconds"] += time.perf_counter() - began
            totals["events"] += len(chunk)
            totals["audit_rows"] += len(batch.events)
            totals["clock_rows"] += len(batch.clocks)
    return totals


def measure(
    server: str, file: SimulatedFile, events: int, batch_size: int = BATCH_SIZE
) -> dict[str, Any]:
    """`Store.write` of the first `events` lines of `file` in worker-sized batches."""
    rules = Rules()
    chunks = batches(file.path, events, batch_size)
    with scratch_database(server, "sink") as url:
        totals = asyncio.run(_write_all(url, chunks, rules))
    rows = totals["audit_rows"] + totals["clock_rows"]
    seconds = totals["seconds"]
    return {
        "sink_events": int(totals["events"]),
        "sink_batches": len(chunks),
        "sink_audit_rows": int(totals["audit_rows"]),
        "sink_clock_rows": int(totals["clock_rows"]),
        "sink_write_seconds": round(seconds, 2),
        "sink_rows_per_second": round(rows / seconds),
        "sink_events_per_second": round(totals["events"] / seconds),
        "sink_batch_write_ms_mean": round(1000 * seconds / len(chunks), 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--database-url", default=DEFAULT_SERVER)
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    args = parser.parse_args(argv)
    file = simulated_file(events=args.events)
    report(measure(args.database_url, file, args.events, args.batch_size), args.json)


if __name__ == "__main__":
    main()
