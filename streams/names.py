"""Names shared across the system: Kafka topics (CONTRACT sections 1-2), metric names
(CONTRACT section 4) and per-referral alert names, used by the worker, the exporter, the
Alertmanager client, the generated rules and the dashboards alike.

Metric names follow `crisiswatch_<noun>_<unit>`, base units (seconds), `_total` on counters.
"""

from __future__ import annotations

from typing import Final

from streams.engine.event import REABLEMENT_2D, UCR_2H
from streams.engine.outcome import AT_RISK, BREACHED

# -- topics -----------------------------------------------------------------------------------

EVENTS_TOPIC: Final = "referral-events"
OUTCOMES_TOPIC: Final = "referral-outcomes"
DLQ_TOPIC: Final = "referral-events-dlq"

# -- per-referral alerts (Alertmanager) -------------------------------------------------------

ALERT_AT_RISK: Final = "ReferralAtRisk"
ALERT_BREACHED: Final = "ReferralBreached"
ALERT_FOR_STATE: Final = {AT_RISK: ALERT_AT_RISK, BREACHED: ALERT_BREACHED}
PATHWAY_NAMES: Final = {UCR_2H: "2-hour urgent response", REABLEMENT_2D: "2-day reablement"}

# -- metrics ----------------------------------------------------------------------------------

OPEN_CLOCKS = "crisiswatch_open_clocks"
CLOCKS_STOPPED = "crisiswatch_clocks_stopped_total"
CLOCK_WAIT = "crisiswatch_clock_wait_seconds"
REFERRALS_RECEIVED = "crisiswatch_referrals_received_total"
EVENTS = "crisiswatch_events_total"
EVENTS_REJECTED = "crisiswatch_events_rejected_total"
BREACHES_WITHDRAWN = "crisiswatch_breaches_withdrawn_total"
LAST_EVENT_TIMESTAMP = "crisiswatch_last_event_timestamp_seconds"
WORKER_UP = "crisiswatch_worker_up"
PARTITIONS_OWNED = "crisiswatch_partitions_owned"
LAST_POSTGRES_WRITE_TIMESTAMP = "crisiswatch_last_postgres_write_timestamp_seconds"
EVENTS_IN_FLIGHT = "crisiswatch_events_in_flight"
POSTGRES_WRITE = "crisiswatch_postgres_write_seconds"

# Upper bounds of the wait histogram, in seconds: 30, 60, 90, 105, 120, 150, 180 minutes
# (the 2-hour standard and its at-risk point), then 1, 2, 3, 4 days (the 2-day standard).
CLOCK_WAIT_BUCKETS: tuple[float, ...] = (
    1800, 3600, 5400, 6300, 7200, 9000, 10800, 86400, 172800, 259200, 345600,
)  # fmt: skip
