"""The region and ICB variables and the filters built from them, in PromQL and in SQL.

Both variables are multi-value with All meaning `.*`. Prometheus gets them as regex matchers
(`region=~"$region"`: Grafana formats several values as `(a|b)`). SQL gets the same regex via
`${var:regex}` (regex-escaped values, or `.*` for All) anchored with `~ '^(...)$'`, so one
selection means the same places in both data sources; NULL places count as `unknown`, as the
exporter labels them.
"""

from __future__ import annotations

from typing import Final

from dashboards.alert_rules import met_rate_record, met_ratio_record
from dashboards.alert_rules import stopped_rate_record as _stopped
from dashboards.model import Variable
from dashboards.policy import ICB, REGION, SPEC
from streams.names import OPEN_CLOCKS

TARGET: Final = SPEC.target  # 0.70: the 2-hour standard's objective, from the rules' table

REGION_VAR: Final = Variable("region", "Region", f"label_values({OPEN_CLOCKS}, region)")
ICB_VAR: Final = Variable("icb", "ICB", f'label_values({OPEN_CLOCKS}{{region=~"$region"}}, icb)')
PLACE_VARIABLES: Final = (REGION_VAR, ICB_VAR)

#: PromQL label matchers of the selected places (series with region and icb labels).
PLACE: Final = 'region=~"$region", icb=~"$icb"'
#: PromQL label matcher of the selected regions (series with a region label only).
REGIONS: Final = 'region=~"$region"'

#: SQL condition on a table or view with region and icb columns.
SQL_PLACE: Final = (
    "coalesce(region, 'unknown') ~ '^(${region:regex})$'\n"
    "  AND coalesce(icb, 'unknown') ~ '^(${icb:regex})$'"
)


def met_ratio_of_selection(window: str) -> str:
    """% met (0..1) of the selected places over `window`, from the ICB recording rules:
    met and stopped rates are summed over the selection first and divided once (never an
    average of ICB percentages, STANDARDS section 5)."""
    met = met_rate_record(ICB, window)
    stopped = _stopped(ICB, window)
    return f"sum({met}{{{PLACE}}})\n/\nsum({stopped}{{{PLACE}}})"


def region_ratio(window: str) -> str:
    return f"{met_ratio_record(REGION, window)}{{{REGIONS}}}"


def icb_ratio(window: str) -> str:
    return f"{met_ratio_record(ICB, window)}{{{PLACE}}}"
