"""Pipeline health: events in and rejected, data freshness, workers and partitions, PostgreSQL
write latency, and the alerts firing in Prometheus. Thresholds are the pipeline alerts' own
(`dashboards.policy.SPEC.pipeline`), so a stat turns red where the alert fires.
"""

from __future__ import annotations

from typing import Final

from dashboards.model import Dashboard, Grid, Panel, PromQuery, Step, count_steps
from dashboards.policy import SPEC, WORKER_JOB
from streams.names import (
    EVENTS,
    EVENTS_IN_FLIGHT,
    EVENTS_REJECTED,
    LAST_EVENT_TIMESTAMP,
    LAST_POSTGRES_WRITE_TIMESTAMP,
    PARTITIONS_OWNED,
    POSTGRES_WRITE,
    WORKER_UP,
)

UID: Final = "crisiswatch-pipeline"

DELAY: Final = SPEC.pipeline.data_delay_seconds  # seconds: the data-delay alert's threshold


def dashboard() -> Dashboard:
    grid = Grid()
    checks = SPEC.pipeline
    stats = [
        Panel(
            "Workers up",
            "stat",
            (PromQuery(f"sum({WORKER_UP}) or vector(0)", legend="up", instant=True),),
            grid.at(4, 5),
            steps=(Step("red"), Step("green", 1)),
        ),
        Panel(
            "Workers not scraped",
            "stat",
            (
                PromQuery(
                    f'count(up{{job="{WORKER_JOB}"}} == 0) or vector(0)',
                    legend="down",
                    instant=True,
                ),
            ),
            grid.at(4, 5),
            description="Scrape targets of the worker job that Prometheus cannot reach.",
            steps=(Step("green"), Step("red", 1)),
        ),
        Panel(
            "Partitions owned",
            "stat",
            (PromQuery(f"sum({PARTITIONS_OWNED}) or vector(0)", legend="owned", instant=True),),
            grid.at(4, 5),
            steps=(Step("red"), Step("green", 1)),
        ),
        Panel(
            "Data freshness",
            "stat",
            (
                PromQuery(
                    f"time() - max({LAST_EVENT_TIMESTAMP})", legend="newest event", instant=True
                ),
            ),
            grid.at(4, 5),
            description=(
                "Age of the newest accepted event's event time; red at the data-delay alert's "
                f"{DELAY // 60} minutes (the alert applies in service hours only)."
            ),
            unit="s",
            decimals=0,
            steps=count_steps(DELAY / 3, DELAY),
        ),
        Panel(
            "Last PostgreSQL write",
            "stat",
            (
                PromQuery(
                    f"time() - max({LAST_POSTGRES_WRITE_TIMESTAMP})", legend="age", instant=True
                ),
            ),
            grid.at(4, 5),
            unit="s",
            decimals=0,
            steps=count_steps(DELAY / 3, DELAY),
        ),
        Panel(
            "Events rejected (share)",
            "stat",
            (
                PromQuery(
                    f"sum(rate({EVENTS_REJECTED}[{checks.rejected_window}]))\n/\n"
                    f"(sum(rate({EVENTS_REJECTED}[{checks.rejected_window}])) "
                    f"+ sum(rate({EVENTS}[{checks.rejected_window}])))",
                    legend="rejected",
                    instant=True,
                ),
            ),
            grid.at(4, 5),
            description=f"Over the last {checks.rejected_window}; red at the alert's "
            f"{checks.rejected_ratio:.0%}.",
            unit="percentunit",
            decimals=2,
            steps=(Step("green"), Step("red", checks.rejected_ratio)),
        ),
    ]
    flows = [
        Panel(
            "Events accepted per second by type",
            "timeseries",
            (PromQuery(f"sum by (type) (rate({EVENTS}[$__rate_interval]))", legend="{{type}}"),),
            grid.at(12, 9),
            unit="ops",
            stack=True,
        ),
        Panel(
            "Events rejected per second by reason",
            "timeseries",
            (
                PromQuery(
                    f"sum by (reason) (rate({EVENTS_REJECTED}[$__rate_interval]))",
                    legend="{{reason}}",
                ),
            ),
            grid.at(12, 9),
            unit="ops",
            stack=True,
        ),
        Panel(
            "Data freshness",
            "timeseries",
            (PromQuery(f"time() - max({LAST_EVENT_TIMESTAMP})", legend="age of the newest event"),),
            grid.at(12, 9),
            unit="s",
            steps=(Step("green"), Step("red", DELAY)),
            threshold_line=True,
        ),
        Panel(
            "Workers up and partitions owned",
            "timeseries",
            (
                PromQuery(f"{WORKER_UP}", legend="up {{instance}}"),
                PromQuery(f"{PARTITIONS_OWNED}", legend="partitions {{instance}}"),
                PromQuery(f"{EVENTS_IN_FLIGHT}", legend="in flight {{instance}}"),
            ),
            grid.at(12, 9),
        ),
        Panel(
            "PostgreSQL batch write latency",
            "timeseries",
            tuple(
                PromQuery(
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate({POSTGRES_WRITE}_bucket[$__rate_interval])))",
                    legend=f"p{round(q * 100)}",
                )
                for q in (0.5, 0.99)
            ),
            grid.at(12, 9),
            description="One batch transaction: audit events, clocks and consumer positions.",
            unit="s",
        ),
        Panel(
            "Alerts firing",
            "table",
            (
                PromQuery(
                    'ALERTS{alertstate="firing"}',
                    legend="{{alertname}}",
                    instant=True,
                    format="table",
                ),
            ),
            grid.at(12, 9),
            description="Prometheus rule alerts firing now (per-referral pages go from the "
            "workers to Alertmanager directly and are not listed here).",
        ),
    ]
    return Dashboard(
        uid=UID,
        title="crisiswatch: pipeline health",
        description="Events, rejects, freshness, workers, partitions, PostgreSQL writes, alerts.",
        panels=(*stats, *flows),
        time_from="now-3h",
        refresh="30s",
    )
