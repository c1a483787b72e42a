"""The alerting policy as a table: the 2-hour objective, its windows, the burn-rate tiers, the
backlog thresholds and the pipeline checks (`SPEC`), with the arithmetic that turns the
Workbook's burn factors into thresholds. Read by the rule generators (`dashboards.alert_rules`,
`dashboards.k8s_rules`) and by the dashboards, so a panel turns red where an alert fires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from streams.engine.event import REABLEMENT_2D, UCR_2H
from streams.engine.outcome import AT_RISK, BREACHED

__all__ = [
    "ENGLAND",
    "ICB",
    "LOCAL_HOUR",
    "PAGE",
    "REGION",
    "SPEC",
    "TICKET",
    "WORKER_JOB",
    "BacklogAlert",
    "BurnTier",
    "Level",
    "PipelineChecks",
    "RuleSpec",
    "burn_threshold",
    "effective_burn",
    "seconds",
]

#: Prometheus job name of the workers (deploy/prometheus/prometheus.yml).
WORKER_JOB: Final = "crisiswatch-worker"
#: Recorded local hour in Europe/London (0-23), for service-hour conditions.
LOCAL_HOUR: Final = "crisiswatch:europe_london:hour"
#: Values of the `severity` label (Alertmanager routes on them).
PAGE: Final = "page"
TICKET: Final = "ticket"

_UNITS: Final = {"m": 60, "h": 3600, "d": 86400}


def seconds(window: str) -> int:
    """A Prometheus duration of one unit (`5m`, `6h`, `28d`) in seconds."""
    return int(window[:-1]) * _UNITS[window[-1]]


@dataclass(frozen=True, slots=True)
class Level:
    """An aggregation level of the recording rules: its name prefix and the labels kept."""

    name: str
    by: tuple[str, ...]


ENGLAND: Final = Level("england", ())
REGION: Final = Level("region", ("region",))
ICB: Final = Level("icb", ("region", "icb"))


@dataclass(frozen=True, slots=True)
class BurnTier:
    """One multiwindow, multi-burn-rate alert (SRE Workbook, "Alerting on SLOs")."""

    alert: str
    workbook_factor: float  # burn rate as the Workbook states it, for a tiny budget
    long: str  # long window: how much budget has burnt
    short: str  # short window: has it stopped burning?
    severity: str
    min_stopped: int = 10  # clocks stopped in the long window before the tier may fire


@dataclass(frozen=True, slots=True)
class BacklogAlert:
    """Too many open clocks in one state, per region, for a while."""

    alert: str
    pathway: str
    state: str
    above: int  # open clocks, summed over the region's ICBs and all workers
    for_: str
    severity: str


@dataclass(frozen=True, slots=True)
class PipelineChecks:
    """Thresholds of the pipeline's health alerts."""

    service_hours: tuple[int, int] = (8, 20)  # local hours [start, end) with events expected
    no_events_window: str = "20m"  # no accepted event in this window ...
    no_events_for: str = "10m"  # ... for this long: 30 minutes of silence
    rejected_ratio: float = 0.05  # rejected / (accepted + rejected) above this ...
    rejected_window: str = "15m"
    rejected_for: str = "15m"
    worker_down_for: str = "2m"
    data_delay_seconds: int = 900  # newest accepted event time older than this, in seconds
    data_delay_for: str = "5m"


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """The whole alerting policy. Change it here, regenerate, commit."""

    pathway: str  # the standard's clocks: the `pathway` label of type-05 clocks
    target: float  # share of stopped clocks met
    ceiling_error_ratio: float  # the highest tier's threshold (see the module docstring)
    windows: tuple[str, ...]  # recorded ratio windows, shortest first
    long_windows_from: str  # windows this long or longer are evaluated less often
    long_interval: str
    tiers: tuple[BurnTier, ...]
    backlog: tuple[BacklogAlert, ...]
    pipeline: PipelineChecks = field(default_factory=PipelineChecks)

    @property
    def budget(self) -> float:
        """Error budget: the share of clocks that may miss the standard."""
        return 1.0 - self.target


SPEC: Final = RuleSpec(
    pathway=UCR_2H,
    target=0.70,
    ceiling_error_ratio=0.90,
    # 1h/6h/1d/7d/28d for dashboards; 5m/30m/2h/3d are the burn-rate tiers' other windows.
    windows=("5m", "30m", "1h", "2h", "6h", "1d", "3d", "7d", "28d"),
    long_windows_from="1d",
    long_interval="5m",
    tiers=(
        BurnTier("CrisiswatchUcrBurnRate1h", 14.4, "1h", "5m", PAGE),
        BurnTier("CrisiswatchUcrBurnRate6h", 6.0, "6h", "30m", PAGE),
        BurnTier("CrisiswatchUcrBurnRate1d", 3.0, "1d", "2h", TICKET),
        BurnTier("CrisiswatchUcrBurnRate3d", 1.0, "3d", "6h", TICKET),
    ),
    backlog=(
        # 2-hour clocks are at risk for 30 minutes: 20 at once in a region needs hands now.
        BacklogAlert("CrisiswatchAtRiskBacklog", UCR_2H, AT_RISK, 20, "10m", PAGE),
        # Provisional breaches stay open until a (late) contact arrives: a ticket to chase.
        BacklogAlert("CrisiswatchBreachedBacklog", UCR_2H, BREACHED, 50, "30m", TICKET),
        # 2-day clocks are at risk from noon of their last day: a ticket for the afternoon.
        BacklogAlert("CrisiswatchAtRiskBacklog", REABLEMENT_2D, AT_RISK, 50, "30m", TICKET),
        BacklogAlert("CrisiswatchBreachedBacklog", REABLEMENT_2D, BREACHED, 20, "1h", TICKET),
    ),
)

# -- the numbers ----------------------------------------------------------------------------


def effective_burn(spec: RuleSpec, tier: BurnTier) -> float:
    """The tier's Workbook factor compressed onto the achievable range (module docstring)."""
    top = max(t.workbook_factor for t in spec.tiers)
    if top <= 1.0:
        return tier.workbook_factor
    k = math.log(spec.ceiling_error_ratio / spec.budget) / math.log(top)
    return float(tier.workbook_factor**k)


def burn_threshold(spec: RuleSpec, tier: BurnTier) -> float:
    """The error ratio above which the tier fires, rounded to the percent."""
    return round(spec.budget * effective_burn(spec, tier), 2)
