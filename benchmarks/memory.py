"""Memory per open clock: an `Engine` holding N open clocks, in a fresh process per size.

    .venv/bin/python -m benchmarks.memory [--clocks 100000 1000000] [--json FILE]

Each size runs in its own interpreter (`--probe N`), so nothing measured before (or the
allocator's free lists from another size) is counted. The probe:

1. imports the engine and codec and decodes a few events (the codec's tables, the schema
   check and the JSON machinery are loaded), collects garbage and reads its resident set
   size (RSS, `/proc/self/status`): the baseline;
2. makes N referrals of realistic events, as CloudEvents JSON decoded by the worker's codec
   (which interns codes such as pathway, provider, ICB and region, as in the worker): every
   referral is received; 75% are triaged (70% of those say subject to the standard); 40% have
   a telephone contact (which does not stop the clock). Each event goes through
   `Engine.apply(event, now)` as the worker's pipeline does, so the engine also holds each
   clock's published outcome and its entry in the deadline heap. Events are made one at a
   time and dropped after use: only what the engine keeps is resident;
3. collects garbage and reads RSS again. Bytes per clock = (RSS - baseline) / N.

It also reports where the bytes of one typical clock go (`sys.getsizeof` of each object it
owns alone; interned codes shared by every clock are not counted).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from benchmarks.report import report

#: The budget per open clock, in bytes (issue 8).
TARGET_BYTES: Final = 1024
_BASE: Final = 1_767_600_000  # 2026-01-05 08:00 UTC, epoch seconds


def rss_bytes() -> int:
    """Resident set size of this process (Linux), in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _format(instant: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(instant))


def referral_lines(number: int, providers: list[tuple[str, str]]) -> list[str]:
    """The CloudEvents of referral `number` (deterministic, simulator-like identifiers)."""
    rid = f"SIM-7-{number:08d}"
    received = _BASE + number * 3  # a receipt every 3 s of event time
    provider, icb = providers[number % len(providers)]
    source = f"urn:nhs:ods:{provider}"
    pathway = "reablement_2d" if number % 10 == 0 else "ucr_2h"
    data: dict[str, Any] = {
        "referral_id": rid, "pathway": pathway, "provider": provider, "icb": icb,
        "referral_source": "gp", "condition": "falls", "patient_ref": f"p-{number:016x}",
    }  # fmt: skip
    lines = [_event(f"sim-7-{4 * number}", source, "referral.received", received, data)]
    if number % 4 != 3:  # 75% triaged
        triage: dict[str, Any] = {"referral_id": rid}
        if number % 10 < 7:
            triage["subject_to_standard"] = True
        lines.append(_event(f"sim-7-{4 * number + 1}", source, "referral.triaged",
                            received + 240, triage))  # fmt: skip
    if number % 5 < 2:  # 40% with a telephone call before the visit
        call = {"referral_id": rid, "contact_id": f"{rid}-C1", "mode": "telephone",
                "attended": True}  # fmt: skip
        lines.append(_event(f"sim-7-{4 * number + 2}", source, "referral.contact",
                            received + 900, call))  # fmt: skip
    return lines


def _event(event_id: str, source: str, kind: str, instant: int, data: dict[str, Any]) -> str:
    document = {
        "specversion": "1.0", "id": event_id, "source": source, "type": kind,
        "time": _format(instant), "datacontenttype": "application/json", "data": data,
    }  # fmt: skip
    return json.dumps(document, separators=(",", ":"))


def probe(clocks: int) -> dict[str, Any]:
    """Run in a fresh process: the measurement of the module docstring for N clocks."""
    from streams.codec import Codec, Rejection
    from streams.engine import Engine
    from streams.pseudonym import Pseudonymiser
    from streams.simulation import icb_profiles

    providers = [(p.code, p.icb) for icb in icb_profiles() for p in icb.providers]
    codec = Codec(Pseudonymiser(b"benchmark-key-not-a-secret"))
    engine = Engine()
    for line in referral_lines(10**9, providers):  # warm the codec up; not kept
        codec.decode(line)
    gc.collect()
    baseline = rss_bytes()
    began = time.perf_counter()
    apply = engine.apply
    decode = codec.decode
    for number in range(clocks):
        for line in referral_lines(number, providers):
            event = decode(line)
            if isinstance(event, Rejection):
                raise AssertionError(f"probe event rejected: {event}")
            apply(event, event.time + 60)
    build_s = time.perf_counter() - began
    gc.collect()
    after = rss_bytes()
    open_now = sum(engine.open_counts().values())
    if open_now != clocks:
        raise AssertionError(f"{open_now} open clocks, expected {clocks}")
    return {
        "clocks": clocks,
        "baseline_rss_bytes": baseline,
        "rss_bytes": after,
        "bytes_per_open_clock": round((after - baseline) / clocks),
        "build_seconds": round(build_s, 1),
        "breakdown": breakdown(engine, f"SIM-7-{min(clocks - 1, 5):08d}"),
    }


def breakdown(engine: Any, referral_id: str) -> dict[str, int]:
    """Bytes of one clock by component: `sys.getsizeof` of each object it references that no
    other clock does, each counted once (times are ints shared by several tuples; codes such
    as pathway, provider, ICB, region and state are interned, shared by every clock)."""
    from collections import Counter

    from streams.engine import Clock

    clock: Clock = engine.clock(referral_id)
    size = sys.getsizeof
    parts: Counter[str] = Counter()
    seen: set[int] = set()

    def add(part: str, obj: object) -> None:
        if id(obj) not in seen:
            seen.add(id(obj))
            parts[part] += size(obj)

    def add_times(values: tuple[object, ...]) -> None:
        for value in values:
            if type(value) is int and not -5 <= value <= 256:  # small ints are cached
                add("times (int objects)", value)

    add("Clock object (11 slots)", clock)
    add("referral id (str)", clock.referral_id)
    add("event_ids (set)", clock.event_ids)
    for event_id in clock.event_ids:
        add("event ids (str)", event_id)
    for name in ("received", "first_triage", "decision", "retriage", "stop", "cancel"):
        value = getattr(clock, name)
        if value is not None:
            add("fact tuples (received, triage, decision...)", value)
            add_times(value)
    if clock.published is not None:
        add("published outcome (Outcome tuple)", clock.published)
        add_times(tuple(clock.published))
    if clock.scheduled is not None:
        add_times((clock.scheduled,))
        # The deadline heap's entry (instant, referral id) and its list slot.
        parts["deadline heap entry (tuple + list slot)"] += size((clock.scheduled, "")) + 8
    clocks = engine._clocks  # the engine's dict: its hash table, shared out per clock
    parts["engine dict entry (amortised)"] += round(size(clocks) / max(len(clocks), 1))
    result = dict(parts)
    result["total"] = sum(parts.values())
    return result


def measure(clocks: int) -> dict[str, Any]:
    """`probe(clocks)` in a fresh interpreter (the current one's allocations would count)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", "--probe", str(clocks)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe for {clocks} clocks failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clocks", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--probe", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    args = parser.parse_args(argv)
    if args.probe is not None:
        print(json.dumps(probe(args.probe)))
        return
    result: dict[str, Any] = {}
    for clocks in args.clocks:
        measured = measure(clocks)
        result[f"bytes per open clock at {clocks:,}"] = measured["bytes_per_open_clock"]
        result[f"breakdown at {clocks:,}"] = measured["breakdown"]
    report(result, args.json)


if __name__ == "__main__":
    main()
