"""Offline replay: an NDJSON event file -> per-referral outcomes (CONTRACT section 2).

The same codec and engine as the live worker. Events are merged in file order: the engine's
merge is order-independent (property-tested), so the result is the one event-time order would
give, without holding millions of events in memory to sort them. Open clocks are judged at the
end against the event-time watermark (the latest event time seen) or `as_of`.

With `as_of`, events that happen after it are left out, so the outcomes are what was known of
the referrals at that instant (a contact an hour later cannot stop a clock "as of" now).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, BinaryIO

from streams.codec import INTERNAL, Codec, Rejection
from streams.engine import COLUMNS, Engine, Outcome, Rules


@dataclass(slots=True)
class ReplayResult:
    outcomes: list[Outcome]
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    after_as_of: int = 0
    pending: int = 0  # referrals whose `referral.received` never arrived
    judged_at: int | None = None
    rejections: dict[str, int] = field(default_factory=dict)


def replay(
    source: BinaryIO,
    *,
    codec: Codec,
    rules: Rules | None = None,
    as_of: int | None = None,
    rejects: IO[str] | None = None,
    progress: Callable[[int], object] | None = None,
) -> ReplayResult:
    """Replay the lines of `source`; write rejected lines as JSON to `rejects`."""
    engine = Engine(rules)
    result = ReplayResult(outcomes=[])
    decode = codec.decode
    ingest = engine.ingest
    for number, raw in _lines(source, progress):
        result.lines = number
        event = decode(raw)
        if not isinstance(event, Rejection) and (as_of is None or event.time <= as_of):
            try:
                new = ingest(event)
            except Exception as exc:  # one line must never stop a replay
                event = Rejection(INTERNAL, None, type(exc).__name__)
            else:
                if new is None:
                    result.duplicates += 1
                else:
                    result.accepted += 1
                continue
        if isinstance(event, Rejection):
            result.rejected += 1
            result.rejections[event.reason] = result.rejections.get(event.reason, 0) + 1
            if rejects is not None:
                text, rewritten = codec.scrub_bytes(raw)
                record = {
                    "line": number,
                    **event.to_record(),
                    "text": text.decode("utf-8", errors="backslashreplace"),
                }
                if rewritten is not None:
                    record["rewritten"] = rewritten
                rejects.write(json.dumps(record, ensure_ascii=False) + "\n")
            continue
        result.after_as_of += 1
    judged_at = as_of if as_of is not None else engine.watermark
    result.judged_at = judged_at
    result.pending = engine.pending()
    result.outcomes = list(engine.outcomes(judged_at if judged_at is not None else 0))
    return result


def write_outcomes(outcomes: list[Outcome], out: IO[str]) -> None:
    """CSV with the contract's columns, one row per referral, sorted by referral id."""
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    writer.writerows(outcome.to_row() for outcome in outcomes)


def _lines(
    source: BinaryIO, progress: Callable[[int], object] | None
) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its end) for every non-blank line."""
    for number, line in enumerate(source, start=1):
        if progress is not None:
            progress(len(line))
        stripped = line.rstrip(b"\r\n")
        if stripped.strip():
            yield number, stripped
