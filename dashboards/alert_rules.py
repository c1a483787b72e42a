"""Prometheus recording and alerting rules, generated from a small table (like Sloth).

    crisiswatch rules build --out deploy/prometheus/rules/crisiswatch.rules.yml

`dashboards.policy.SPEC` is the whole policy: the 70% objective, the windows, the burn-rate
tiers, the backlog thresholds and the pipeline checks. Everything else here turns it into PromQL and
writes it deterministically (sorted keys, table order, a fixed header), so the committed file
is reproducible and `tests/integration/test_alert_rules.py` can rebuild it and compare (a
golden file).
Metric names come from `streams.names`, the module the exporter uses.

Recording rules: % met from record-level counts
------------------------------------------------
For every window (`SPEC.windows`) and aggregation level (England; region; ICB)::

    <level>:crisiswatch_clocks_stopped:rate<window>     type-05 clocks stopped per second
    <level>:crisiswatch_clocks_met:ratio_rate<window>   share of those that were met (0..1)
    icb:crisiswatch_clocks_met:rate<window>             (ICB only) met clocks per second

named `level:metric:operations` as Prometheus' naming practice has it, the level being the
labels kept (`england`: none; `region`: region; `icb`: region and icb), so that one name
always has one label set and a dashboard selecting a name never mixes levels. The ratio is
``sum(rate(met)) / sum(rate(met + not_met))`` over `crisiswatch_clocks_stopped_total` with
``pathway="ucr_2h"`` (that counter only counts type-05 and type-06 clocks, so this is the
type-05 standard): counts are summed first and divided once, never an average of lower-level
percentages (STANDARDS section 5). Only the ICB level reads the counters; regions and
England sum the ICB rates (rates add up), which makes the levels consistent by construction
and reads each 28-day range once, not three times. A level with stops but no *met* series
yet gets 0, not nothing (``or 0 * stopped``); with no stops in the window, no ratio (not NaN).
Windows of a day and more are evaluated every 5 minutes: they move slowly and are the costly
ones. England includes `region="unknown"`; the region level shows `unknown` as its own row.

Burn-rate alerts: the SRE Workbook's windows, with factors scaled to a 30% budget
---------------------------------------------------------------------------------
The error ratio is ``not_met / (met + not_met)`` and the error budget is ``1 - 0.70 = 0.30``.
The Workbook's table (14.4x over 1h & 5m, 6x over 6h & 30m: page; 3x over 1d & 2h, 1x over
3d & 6h: ticket) was made for budgets of a fraction of a percent. A ratio cannot exceed 1, so
with a 30% budget the highest possible burn rate is 1 / 0.30 = 3.33x: 14.4x and 6x can never
happen and even 3x needs 90% of patients missed. Capping each threshold at 1 (or just below)
would make the two page tiers identical and leave the 1-day ticket firing only on a collapse.

So we keep the Workbook's windows, severities and order, and compress its factors onto the
achievable range on a log scale, which keeps them geometrically spaced as the Workbook has
them: ``effective = factor ** k`` with ``k = ln(ceiling / budget) / ln(14.4)``, so that 1x stays
1x (the rate that spends exactly the month's budget: the month ends at 70%) and 14.4x becomes
`ceiling_error_ratio` (0.90: nine in ten patients missed). Thresholds on the error ratio,
rounded to the percent:

    tier  windows     Workbook  effective  error ratio above  severity
    1     1h & 5m       14.4x     3.00x        0.90            page
    2     6h & 30m       6x       2.09x        0.63            page
    3     1d & 2h        3x       1.57x        0.47            ticket
    4     3d & 6h        1x       1.00x        0.30            ticket

England ran at 83-86% met in 2024-25 (error ratio 0.14-0.17), so none fire in a normal month.

Two changes for sparse data, where a region stops a dozen clocks an hour and a quiet ICB none:

* **Minimum volume**: a tier fires only with at least `min_stopped` (10) clocks stopped in its
  long window, so two missed visits at night are not "100% missed".
* **The short window vetoes rather than confirms**: the Workbook requires the short window to
  burn too, so an alert stops soon after recovery. Here a 5-minute window is often empty, and
  an empty window is not a recovery, so the alert fires on the long window *unless* the short
  window has stops and is within the threshold (``unless (1 - short) <= threshold``).

Volume is ``stopped rate * window seconds`` (Prometheus' extrapolated increase). Each tier
exists per region (label `region`, routed to the region's on-call) and for England (no region
label: routed to the national on-call); the static label `level` (`region` / `england`)
tells the two rules of one alertname apart.

Backlog and pipeline alerts
---------------------------
Backlog: open clocks in one state summed per (pathway, region) over ICBs and workers, above a
threshold for a while (`SPEC.backlog`; the static `pathway` label tells the rows apart).
Pipeline: a worker Prometheus cannot scrape (``up == 0``, or no worker known at all); no
accepted event in service hours (a missing counter counts as none, ``or vector(0)``); more
than 5% of events rejected; and data delay, the newest accepted event time (``max`` over
workers, so an idle partition does not hold it back) older than 15 minutes in service hours.

Service hours without time zones
--------------------------------
"No events" and "data delay" only alert during service hours, 08:00-20:00 Europe/London.
PromQL's `hour()` is UTC, so a recording rule, ``crisiswatch:europe_london:hour``, computes the
local hour: UTC + 1 from the last Sunday of March to the last Sunday of October (the UK rule
since 1981), else UTC. A day is in that period when the Sunday on or before it
(``day_of_month() - day_of_week()``) is on or after the 25th of March, or before the 25th of
October (the last Sunday of a 31-day month is the 25th or later). The change happens at
01:00 UTC; the formula switches at 00:00 UTC, so it is an hour wrong in the first hour of
the two changeover days (00:00-01:00 UTC), which is never in service hours. Tests pin both
changeovers (`crisiswatch.calendar.test.yml`). If the UK changes its rules, change this rule.

Links
-----
Every alert has annotations `summary`, `description` (what it means), `action` (what to do:
the runbook line) and `dashboard`, built from the Prometheus external label `dashboard_url`
(the same URL the worker's per-referral alerts use); without that label the link is empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml

from dashboards.policy import (
    ENGLAND,
    ICB,
    LOCAL_HOUR,
    PAGE,
    REGION,
    SPEC,
    TICKET,
    WORKER_JOB,
    BacklogAlert,
    BurnTier,
    Level,
    PipelineChecks,
    RuleSpec,
    burn_threshold,
    seconds,
)
from streams.atomic import write_text_atomic
from streams.engine.outcome import AT_RISK, MET
from streams.names import (
    ALERT_AT_RISK,
    ALERT_BREACHED,
    CLOCKS_STOPPED,
    EVENTS,
    EVENTS_REJECTED,
    LAST_EVENT_TIMESTAMP,
    OPEN_CLOCKS,
    PATHWAY_NAMES,
)

__all__ = [
    "HEADER",
    "dump",
    "met_rate_record",
    "met_ratio_record",
    "render",
    "rule_groups",
    "stopped_rate_record",
    "write",
]

HEADER: Final = (
    "# Generated by `crisiswatch rules build` from the\n"
    "# table in dashboards/policy.py. Do not edit: change the table and regenerate.\n"
)


def stopped_rate_record(level: Level, window: str) -> str:
    return f"{level.name}:{_base(CLOCKS_STOPPED)}:rate{window}"


def met_rate_record(level: Level, window: str) -> str:
    return f"{level.name}:crisiswatch_clocks_met:rate{window}"


def met_ratio_record(level: Level, window: str) -> str:
    return f"{level.name}:crisiswatch_clocks_met:ratio_rate{window}"


def _base(counter: str) -> str:
    return counter.removesuffix("_total")


def _selector(metric: str, **labels: str) -> str:
    inner = ", ".join(f'{name}="{value}"' for name, value in labels.items())
    return f"{metric}{{{inner}}}"


def _sum(level: Level, expr: str) -> str:
    if not level.by:
        return f"sum({expr})"
    return f"sum by ({', '.join(level.by)}) ({expr})"


def _percent(ratio: float) -> str:
    return f"{ratio * 100:g}%"


# -- recording rules ------------------------------------------------------------------------


def _recording(spec: RuleSpec, window: str) -> list[dict[str, Any]]:
    """ICB rates from the counters; region and England sums of the ICB rates (one raw range
    read per counter and window, and levels that add up by construction)."""
    stopped = _selector(CLOCKS_STOPPED, pathway=spec.pathway)
    met = _selector(CLOCKS_STOPPED, pathway=spec.pathway, result=MET)
    icb_met = met_rate_record(ICB, window)
    rules: list[dict[str, Any]] = [
        {
            "record": stopped_rate_record(ICB, window),
            "expr": _sum(ICB, f"rate({stopped}[{window}])"),
        },
        {"record": icb_met, "expr": _sum(ICB, f"rate({met}[{window}])")},
        _ratio(ICB, window, icb_met),
    ]
    for level in (REGION, ENGLAND):
        rules.append(
            {
                "record": stopped_rate_record(level, window),
                "expr": _sum(level, stopped_rate_record(ICB, window)),
            }
        )
        rules.append(_ratio(level, window, _sum(level, icb_met)))
    return rules


def _ratio(level: Level, window: str, met: str) -> dict[str, Any]:
    # A level with stops but no met series yet gets 0; with no stops, no ratio (not NaN).
    rate = stopped_rate_record(level, window)
    return {
        "record": met_ratio_record(level, window),
        "expr": f"(\n  {met}\n  or\n  0 * {rate}\n)\n/ ({rate} > 0)\n",
    }


def _local_hour() -> dict[str, Any]:
    bst = (
        "(month() > 3 and month() < 10)\n"
        "      or (month() == 3 and day_of_month() - day_of_week() >= 25)\n"
        "      or (month() == 10 and day_of_month() - day_of_week() < 25)"
    )
    return {
        "record": LOCAL_HOUR,
        "expr": (
            "(\n"
            "  hour()\n"
            "  + (\n"
            "    (vector(1) and (\n"
            f"      {bst}\n"
            "    ))\n"
            "    or vector(0)\n"
            "  )\n"
            ") % 24\n"
        ),
    }


# -- alerts ---------------------------------------------------------------------------------


def _dashboard(region: bool) -> str:
    query = "?var-region={{ $labels.region }}" if region else ""
    return "{{ with $externalLabels.dashboard_url }}{{ . }}" + query + "{{ end }}"


def _burn_alerts(spec: RuleSpec, tier: BurnTier) -> list[dict[str, Any]]:
    threshold = burn_threshold(spec, tier)
    rules: list[dict[str, Any]] = []
    for level in (REGION, ENGLAND):
        where = "{{ $labels.region }}" if level is REGION else "England"
        long_ratio = met_ratio_record(level, tier.long)
        short_ratio = met_ratio_record(level, tier.short)
        volume = stopped_rate_record(level, tier.long)
        rules.append(
            {
                "alert": tier.alert,
                "expr": (
                    f"(1 - {long_ratio}) > {threshold}\n"
                    f"and {volume} * {seconds(tier.long)} >= {tier.min_stopped}\n"
                    f"unless (1 - {short_ratio}) <= {threshold}\n"
                ),
                # `level` tells the region's alert from England's (same name, same severity).
                "labels": {"level": level.name, "severity": tier.severity},
                "annotations": {
                    "summary": (
                        f"{where}: {{{{ $value | humanizePercentage }}}} of 2-hour clocks missed "
                        f"over {tier.long}; the 70% target is burning"
                    ),
                    "description": (
                        f"In {where}, {{{{ $value | humanizePercentage }}}} of type-05 2-hour "
                        f"referrals whose clocks stopped in the last {tier.long} were not seen "
                        f"within 2 hours (alert above {_percent(threshold)}, with at least "
                        f"{tier.min_stopped} clocks stopped, unless the last {tier.short} has "
                        f"recovered). Sustained, this loses the month's "
                        f"{_percent(spec.target)} target (SRE Workbook tier "
                        f"{tier.workbook_factor:g}x, scaled to a "
                        f"{_percent(round(spec.budget, 2))} error budget)."
                    ),
                    "action": (
                        "Open the dashboard for the clocks at risk and breached now; check that "
                        "crisis teams are staffed and dispatching, that visits are being "
                        "recorded, and escalate to the service manager on call."
                        if tier.severity == PAGE
                        else "Review the period's missed clocks with the service leads by the "
                        "next working day: staffing, triage and late recording of visits."
                    ),
                    "dashboard": _dashboard(level is REGION),
                },
            }
        )
    return rules


def _backlog_alert(alert: BacklogAlert) -> dict[str, Any]:
    gauge = _selector(OPEN_CLOCKS, pathway=alert.pathway, state=alert.state)
    state = alert.state.replace("_", " ")
    name = PATHWAY_NAMES[alert.pathway]
    return {
        "alert": alert.alert,
        "expr": f"sum by (pathway, region) ({gauge}) > {alert.above}\n",
        "for": alert.for_,
        "labels": {"pathway": alert.pathway, "severity": alert.severity},
        "annotations": {
            "summary": (
                f"{{{{ $labels.region }}}}: {{{{ $value }}}} {name} clocks {state} "
                f"(over {alert.above})"
            ),
            "description": (
                f"{{{{ $value }}}} open {name} clocks in region {{{{ $labels.region }}}} have been "
                f"{state} for {alert.for_} or more (alert above {alert.above}). Each also has "
                f"its own {ALERT_AT_RISK if alert.state == AT_RISK else ALERT_BREACHED} alert."
            ),
            "action": (
                "Triage the at-risk list on the dashboard now: redeploy crews, call in "
                "cover, and make sure visits already made are recorded."
                if alert.state == AT_RISK
                else "Chase the breached referrals: record visits that happened, and see that "
                "the patients still waiting are seen or handed over."
            ),
            "dashboard": _dashboard(region=True),
        },
    }


def _service_hours(checks: PipelineChecks) -> str:
    start, end = checks.service_hours
    return f"and on () ({LOCAL_HOUR} >= {start} and {LOCAL_HOUR} < {end})\n"


def _pipeline_alerts(checks: PipelineChecks) -> list[dict[str, Any]]:
    start, end = checks.service_hours
    hours = f"{start:02d}:00-{end:02d}:00 Europe/London"
    up = _selector("up", job=WORKER_JOB)
    w = checks.rejected_window
    rejected = f"sum(rate({EVENTS_REJECTED}[{w}]))"
    return [
        {
            "alert": "CrisiswatchWorkerDown",
            "expr": f"{up} == 0\nor\nabsent({up})\n",
            "for": checks.worker_down_for,
            "labels": {"severity": PAGE},
            "annotations": {
                "summary": (
                    "crisiswatch worker "
                    "{{ with $labels.instance }}{{ . }}{{ else }}(none scraped){{ end }} is down"
                ),
                "description": (
                    "Prometheus cannot scrape a crisiswatch worker (or none is known). Its "
                    "partitions' referrals get no at-risk or breach pages until another worker "
                    "takes them over."
                ),
                "action": (
                    "Check the worker process and its logs (`crisiswatch worker`), the broker and "
                    "PostgreSQL; restart it. Data-delay and no-events alerts are silenced "
                    "meanwhile."
                ),
                "dashboard": _dashboard(region=False),
            },
        },
        {
            "alert": "CrisiswatchNoEvents",
            "expr": (
                f"(sum(increase({EVENTS}[{checks.no_events_window}])) or vector(0)) == 0\n"
                + _service_hours(checks)
            ),
            "for": checks.no_events_for,
            "labels": {"severity": PAGE},
            "annotations": {
                "summary": (
                    f"No referral events accepted for {checks.no_events_window} in service hours"
                ),
                "description": (
                    f"No referral event has been accepted in the last {checks.no_events_window} "
                    f"during service hours ({hours}), when England sends a few every minute. "
                    "Live at-risk pages are blind until events flow again."
                ),
                "action": (
                    "Check the publishers and the referral-events topic (`crisiswatch topics`), "
                    "then the workers' logs; ask the source systems whether their feed stopped."
                ),
                "dashboard": _dashboard(region=False),
            },
        },
        {
            "alert": "CrisiswatchEventsRejected",
            "expr": (
                f"{rejected}\n/\n"
                f"({rejected} + (sum(rate({EVENTS}[{w}])) or vector(0)))\n"
                f"> {checks.rejected_ratio}\n"
            ),
            "for": checks.rejected_for,
            "labels": {"severity": TICKET},
            "annotations": {
                "summary": "{{ $value | humanizePercentage }} of referral events rejected",
                "description": (
                    f"Over {_percent(checks.rejected_ratio)} of incoming events were rejected in "
                    f"the last {w} (by reason: {EVENTS_REJECTED}). Rejected events never "
                    "reach a clock, so referrals may be missing from the figures and pages."
                ),
                "action": (
                    "Read the dead-letter topic to see which source sends what, and raise it "
                    "with that source system's owner."
                ),
                "dashboard": _dashboard(region=False),
            },
        },
        {
            "alert": "CrisiswatchDataDelay",
            "expr": (
                f"time() - max({LAST_EVENT_TIMESTAMP}) > {checks.data_delay_seconds}\n"
                + _service_hours(checks)
            ),
            "for": checks.data_delay_for,
            "labels": {"severity": PAGE},
            "annotations": {
                "summary": "Newest referral event is {{ $value | humanizeDuration }} old",
                "description": (
                    "The newest accepted event happened more than "
                    f"{checks.data_delay_seconds // 60} minutes ago, during service hours "
                    f"({hours}): events are delayed upstream or the workers lag, so live "
                    "states and pages are late."
                ),
                "action": (
                    "Check consumer lag on the referral-events topic and the workers' Postgres "
                    "writes; then the publishers' queues upstream."
                ),
                "dashboard": _dashboard(region=False),
            },
        },
    ]


def rule_groups(spec: RuleSpec = SPEC) -> dict[str, Any]:
    """The rules file as data, in a fixed order."""
    long_from = seconds(spec.long_windows_from)
    short = [w for w in spec.windows if seconds(w) < long_from]
    long = [w for w in spec.windows if seconds(w) >= long_from]
    return {
        "groups": [
            {"name": "crisiswatch-calendar", "rules": [_local_hour()]},
            {
                "name": "crisiswatch-ucr-sli",
                "rules": [rule for window in short for rule in _recording(spec, window)],
            },
            {
                "name": "crisiswatch-ucr-sli-long",
                "interval": spec.long_interval,
                "rules": [rule for window in long for rule in _recording(spec, window)],
            },
            {
                "name": "crisiswatch-ucr-burn-rate",
                "rules": [rule for tier in spec.tiers for rule in _burn_alerts(spec, tier)],
            },
            {
                "name": "crisiswatch-backlog",
                "rules": [_backlog_alert(alert) for alert in spec.backlog],
            },
            {"name": "crisiswatch-pipeline", "rules": _pipeline_alerts(spec.pipeline)},
        ]
    }


# -- YAML -----------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings (PromQL) as literal blocks, as a person writes them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(value: Any, header: str = HEADER) -> str:
    """Deterministic YAML of generated rules (sorted keys, no timestamps) under `header`."""
    body = yaml.dump(
        value,
        Dumper=_Dumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,  # one line per annotation: readable diffs, no folding
    )
    return header + body


def render(spec: RuleSpec = SPEC) -> str:
    """The rules file: deterministic (sorted keys, table order, no timestamps)."""
    return dump(rule_groups(spec))


def write(path: Path, spec: RuleSpec = SPEC) -> None:
    """Write the rules file via a temporary sibling and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, render(spec))
