"""The operations board under load, against a real board process and PostgreSQL.

    .venv/bin/python -m benchmarks.board [--open 100000] [--closed 400000] [--clients 50]
        [--requests 300] [--events 100000] [--json FILE]

Measures:

* `/api/worklist` (and `/api/summary`, the page) latency seen by one client, sequential
  requests, with `--open` open clocks and `--closed` stopped ones in the `clocks` table. The
  open clocks are shaped like a busy day: most waiting (2-hour clocks under 90 minutes old,
  2-day clocks under a day old), 3% at risk or breached (the worklist's length is reported);
* `--clients` concurrent Server-Sent Events clients: time until every one has its first
  message, then for each of 10 worker-like commits (a clock stopped, NOTIFY in the same
  transaction), the delay until each client has the update (p50/p95/max over all);
* the worker's throughput ratio (`benchmarks.worker`: worker vs raw aiokafka consumption of
  `--events` events) without a board, then with a board and its SSE clients reading the
  same database throughout.

Needs PostgreSQL (default: the local server, where scratch databases are created and
dropped). Figures go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import psycopg

from benchmarks import DEFAULT_SERVER
from benchmarks.report import report
from benchmarks.services import scratch_database, stored_events, worker_process
from benchmarks.worker import BATCH_SIZE, create_bench_topics, publish, raw_consume, time_worker
from consumers.local.embedded import EmbeddedBroker, reap
from consumers.store import CLOCKS_CHANNEL
from streams.errors import ServiceError

UPDATES: Final = 10  # worker-like commits timed through the SSE clients
REGIONS: Final = ("Y56", "Y58", "Y59", "Y60", "Y61", "Y62", "Y63")

# One INSERT per kind of clock: (clock type, state, is_open, start range in seconds ago).
_SEED: Final = """
INSERT INTO clocks (referral_id, kafka_partition, pathway, clock_type, region, icb, provider,
                    referral_received_at, clock_start, clock_stop, wait_seconds, breach_at,
                    state, is_open, engine_state)
SELECT %(prefix)s || i, i %% 12,
       CASE WHEN %(type)s = '06' THEN 'reablement_2d' ELSE 'ucr_2h' END, %(type)s,
       (%(regions)s::text[])[1 + i %% 7], 'Q' || lpad((i %% 42)::text, 2, '0'),
       'R' || lpad((i %% 300)::text, 3, '0'),
       s.start, s.start,
       CASE WHEN %(open)s THEN NULL ELSE s.start + interval '80 minutes' END,
       CASE WHEN %(open)s THEN NULL ELSE 4800 END,
       CASE WHEN %(open)s THEN s.start + interval '7201 seconds' END,
       %(state)s, %(open)s, '{}'::jsonb
FROM generate_series(1, %(n)s) AS i,
     -- `i * 0` makes the subquery depend on the row: one random start per clock.
     LATERAL (SELECT now() - make_interval(secs => %(newest)s + i * 0
                                                  + random() * (%(oldest)s - %(newest)s)))
             AS s(start)
"""


def seed(url: str, open_clocks: int, closed_clocks: int) -> None:
    """`open_clocks` open clocks shaped like a busy day, and `closed_clocks` stopped ones."""
    waiting_ucr = open_clocks * 40 // 100
    at_risk = open_clocks * 15 // 1000
    breached = open_clocks * 15 // 1000
    waiting_day = open_clocks - waiting_ucr - at_risk - breached
    kinds = [
        ("w5-", "05", "waiting", True, 0, 85 * 60, waiting_ucr),
        ("r5-", "05", "at_risk", True, 91 * 60, 119 * 60, at_risk),
        ("b5-", "05", "breached", True, 121 * 60, 6 * 3600, breached),
        ("w6-", "06", "waiting", True, 0, 86400, waiting_day),
        ("m5-", "05", "met", False, 0, 30 * 86400, closed_clocks),
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        for prefix, kind, state, is_open, newest, oldest, n in kinds:
            conn.execute(
                _SEED,
                {"prefix": prefix, "type": kind, "state": state, "open": is_open,
                 "newest": newest, "oldest": oldest, "n": n, "regions": list(REGIONS)},
            )  # fmt: skip
        conn.execute("ANALYZE clocks")


@contextlib.contextmanager
def board_process(url: str) -> Iterator[str]:
    """`crisiswatch board` on a free loopback port; its address without the trailing /."""
    process = subprocess.Popen(
        [sys.executable, "-m", "consumers.cli", "board", "--database-url", url, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        line = process.stdout.readline().decode()
        if not line.startswith("board: http://"):
            raise ServiceError(f"the board did not start: {line!r}")
        yield line.split(" ", 1)[1].strip().rstrip("/")
    finally:
        reap(process, 10.0)
        process.stdout.close()


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    cut = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": ordered[len(ordered) // 2], "p95": cut[94], "p99": cut[98], "max": ordered[-1]}


async def latency(base: str, path: str, requests: int) -> tuple[dict[str, float], int]:
    """Sequential GETs of `path`: percentiles in ms, and the size of the last answer."""
    times: list[float] = []
    size = 0
    async with aiohttp.ClientSession() as session:
        for i in range(requests + 10):
            start = time.perf_counter()
            async with session.get(base + path) as response:
                body = await response.read()
                if response.status != 200:
                    raise ServiceError(f"{path} answered {response.status}")
            if i >= 10:  # the first ten warm the pool and the server's caches
                times.append((time.perf_counter() - start) * 1000)
            size = len(body)
    return {k: round(v, 1) for k, v in _percentiles(times).items()}, size


async def sse_clients(base: str, url: str, clients: int) -> dict[str, Any]:
    """Connect `clients` SSE clients; time first messages, then UPDATES stopped clocks."""
    received: list[list[tuple[float, bytes]]] = [[] for _ in range(clients)]
    connected = asyncio.Event()
    first: list[float] = []
    started = time.perf_counter()

    async def client(index: int, session: aiohttp.ClientSession) -> None:
        async with session.get(base + "/events") as response:
            async for line in response.content:
                if line.startswith(b"data: "):
                    if not received[index]:
                        first.append(time.perf_counter() - started)
                        if len(first) == clients:
                            connected.set()
                    received[index].append((time.perf_counter(), line))

    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = [asyncio.create_task(client(i, session)) for i in range(clients)]
        await asyncio.wait_for(connected.wait(), 120)
        delays: list[float] = []
        with psycopg.connect(url, autocommit=True) as conn:
            for n in range(UPDATES):
                referral = f"r5-{n + 1}"
                with conn.transaction():
                    conn.execute(
                        "UPDATE clocks SET is_open = false, state = 'met', clock_stop = now(),"
                        " updated_at = now() WHERE referral_id = %s",
                        (referral,),
                    )
                    conn.execute(f"NOTIFY {CLOCKS_CHANNEL}")
                committed = time.perf_counter()
                marker = f'data-referral-id=\\"{referral}\\"'.encode()
                deadline = committed + 30
                pending = set(range(clients))
                while pending and time.perf_counter() < deadline:
                    for i in list(pending):
                        latest = received[i][-1]
                        if latest[0] >= committed and marker not in latest[1]:
                            delays.append(latest[0] - committed)
                            pending.discard(i)
                    await asyncio.sleep(0.005)
                if pending:
                    raise ServiceError(f"{len(pending)} SSE clients never saw update {n}")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "sse_clients": clients,
        "sse_all_connected_seconds": round(max(first), 3),
        "sse_update_delay_seconds": {k: round(v, 3) for k, v in _percentiles(delays).items()},
    }


def throughput(server: str, events: int, clients: int, with_board: bool) -> dict[str, Any]:
    """`benchmarks.worker.measure`, optionally with a board and SSE clients on its database."""
    with scratch_database(server, "boardtp") as url, EmbeddedBroker() as broker:
        create_bench_topics(broker.bootstrap)
        sent = publish(broker.bootstrap, events)
        raw_s = min(asyncio.run(raw_consume(broker.bootstrap, sent)) for _ in range(3))
        with contextlib.ExitStack() as stack:
            if with_board:
                base = stack.enter_context(board_process(url))
                stack.enter_context(_background_clients(base, clients))
            with worker_process(broker.bootstrap, url, batch_size=BATCH_SIZE, label="tp") as w:
                worker_s = time_worker(url, sent, w, timeout_s=120 + sent / 100)
        if stored_events(url) != sent:
            raise ServiceError("the worker did not store every event")
    return {
        "raw_events_per_second": round(sent / raw_s),
        "worker_events_per_second": round(sent / worker_s),
        "throughput_ratio": round(raw_s / worker_s, 4),
    }


@contextlib.contextmanager
def _background_clients(base: str, clients: int) -> Iterator[None]:
    """`clients` SSE clients reading the board's stream on a thread of their own."""
    stop = threading.Event()

    async def run() -> None:
        async def one(session: aiohttp.ClientSession) -> None:
            async with session.get(base + "/events") as response:
                async for _ in response.content:
                    if stop.is_set():
                        return

        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks = [asyncio.create_task(one(session)) for _ in range(clients)]
            while not stop.is_set():
                await asyncio.sleep(0.2)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def measure(
    server: str, open_clocks: int, closed_clocks: int, clients: int, requests: int, events: int
) -> dict[str, Any]:
    result: dict[str, Any] = {"open_clocks": open_clocks, "closed_clocks": closed_clocks}
    with scratch_database(server, "board") as url:
        seed(url, open_clocks, closed_clocks)
        with board_process(url) as base:
            for name, path in (
                ("worklist", "/api/worklist"),
                ("worklist_region", "/api/worklist?region=Y62"),
                ("summary", "/api/summary"),
                ("page", "/"),
            ):
                figures, size = asyncio.run(latency(base, path, requests))
                result[f"{name}_ms"] = figures
                result[f"{name}_bytes"] = size

            async def count() -> int:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(base + "/api/worklist") as response,
                ):
                    return len((await response.json())["items"])

            result["worklist_items"] = asyncio.run(count())
            result.update(asyncio.run(sse_clients(base, url, clients)))
    if events:
        without = throughput(server, events, clients, with_board=False)
        with_board = throughput(server, events, clients, with_board=True)
        result["throughput_ratio_without_board"] = without["throughput_ratio"]
        result["throughput_ratio_with_board"] = with_board["throughput_ratio"]
        result["throughput_events"] = events
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--open", type=int, default=100_000)
    parser.add_argument("--closed", type=int, default=400_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--events", type=int, default=100_000, help="0: skip the worker part")
    parser.add_argument("--database-url", default=DEFAULT_SERVER)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report(
        measure(args.database_url, args.open, args.closed, args.clients, args.requests,
                args.events),
        args.json,
    )  # fmt: skip


if __name__ == "__main__":
    main()
