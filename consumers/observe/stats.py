"""The pipeline's counters: what the live pipeline counts and the metrics adapter reads.

The pipeline only increments and appends (cheap, on its own thread of control); the Prometheus
collector (`consumers.observe.metrics`) reads the counters and drains the sample lists at
scrape time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Stats"]


@dataclass(slots=True)
class Stats:
    """Counters the metrics adapter reads (monotonic; never reset)."""

    events: Counter[str] = field(default_factory=Counter)  # accepted, by type
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # by reason
    changes: int = 0
    withdrawn: Counter[tuple[str, str]] = field(default_factory=Counter)  # (pathway, region)
    stopped: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    received: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    waits: list[tuple[str, str, int]] = field(default_factory=list)  # drained by metrics
    batches: int = 0
    fenced: int = 0  # writes refused because another worker took partitions over
    last_event_time: int | None = None
    last_write: float | None = None  # wall clock of the last committed transaction
    write_seconds: list[float] = field(default_factory=list)  # drained by metrics
    in_flight: int = 0
