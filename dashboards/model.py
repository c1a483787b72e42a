"""A small typed builder of Grafana 11 dashboard JSON (schemaVersion 39).

Why not grafana-foundation-sdk: its unpinned install resolves to the Grafana 10.1 build, and
the pinned Grafana 11 builds are pre-release wheels with a builder per panel kind; the few
panel kinds crisiswatch needs fit in these dataclasses, which mypy checks and which render to
exactly the JSON Grafana stores (`Dashboard.to_dict`). The SDK's idea is kept: dashboards
are values built by code, rendered deterministically.

Determinism: no timestamps, no random ids. Panel ids are positions (1, 2, ...), refIds
letters (A, B, ...), and `render` (in `dashboards.build`) sorts keys, so rebuilding an
unchanged dashboard gives byte-identical JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

SCHEMA_VERSION: Final = 39  # Grafana 11.0 - 11.x dashboards

# Data sources are referenced by fixed uids; deploy/grafana/provisioning/datasources creates
# data sources with exactly these uids, so dashboards work with no clicks.
PROMETHEUS: Final = {"type": "prometheus", "uid": "crisiswatch-prometheus"}
POSTGRES: Final = {"type": "grafana-postgresql-datasource", "uid": "crisiswatch-postgres"}


@dataclass(frozen=True, slots=True)
class PromQuery:
    """A PromQL target. `legend` is Grafana's legendFormat (`{{label}}`)."""

    expr: str
    legend: str = "__auto"
    instant: bool = False
    format: Literal["time_series", "table"] = "time_series"

    def to_dict(self, ref_id: str) -> dict[str, Any]:
        return {
            "datasource": dict(PROMETHEUS),
            "editorMode": "code",
            "expr": self.expr,
            "format": self.format,
            "instant": self.instant,
            "legendFormat": self.legend,
            "range": not self.instant,
            "refId": ref_id,
        }


@dataclass(frozen=True, slots=True)
class SqlQuery:
    """A raw SQL target of the PostgreSQL data source; `columns` are the result's columns in
    order (tests run the query as the read-only role and compare)."""

    sql: str
    columns: tuple[str, ...]
    format: Literal["table", "time_series"] = "table"

    def to_dict(self, ref_id: str) -> dict[str, Any]:
        return {
            "datasource": dict(POSTGRES),
            "editorMode": "code",
            "format": self.format,
            "rawQuery": True,
            "rawSql": self.sql,
            "refId": ref_id,
        }


Query = PromQuery | SqlQuery


@dataclass(frozen=True, slots=True)
class Step:
    """A threshold step: `color` from `value` upwards (None: the base step)."""

    color: str
    value: float | None = None


GREEN_ONLY: Final = (Step("green"),)


def target_steps(target: float) -> tuple[Step, ...]:
    """Red below the target, green at or above it (a % met panel)."""
    return (Step("red"), Step("green", target))


def count_steps(amber: float, red: float) -> tuple[Step, ...]:
    """Green, amber from `amber`, red from `red` (a backlog count)."""
    return (Step("green"), Step("orange", amber), Step("red", red))


PanelType = Literal["stat", "timeseries", "table", "bargauge", "text"]


@dataclass(frozen=True, slots=True)
class Panel:
    """A panel; its position on the 24-column grid is (x, y, w, h)."""

    title: str
    type: PanelType
    queries: tuple[Query, ...]
    grid: tuple[int, int, int, int]
    description: str = ""
    unit: str = "short"
    steps: tuple[Step, ...] = GREEN_ONLY
    min: float | None = None
    max: float | None = None
    decimals: int | None = None
    threshold_line: bool = False  # draw the thresholds as lines (timeseries: the 70% target)
    stack: bool = False
    options: tuple[tuple[str, Any], ...] = ()  # extra panel options, merged last

    @property
    def datasource(self) -> dict[str, str]:
        kinds = {type(q) for q in self.queries}
        if len(kinds) != 1:
            raise ValueError(f"panel {self.title!r}: one data source per panel")
        return dict(PROMETHEUS if kinds == {PromQuery} else POSTGRES)

    def to_dict(self, panel_id: int) -> dict[str, Any]:
        x, y, w, h = self.grid
        defaults: dict[str, Any] = {
            "thresholds": {
                "mode": "absolute",
                "steps": [{"color": s.color, "value": s.value} for s in self.steps],
            },
            "unit": self.unit,
        }
        if self.min is not None:
            defaults["min"] = self.min
        if self.max is not None:
            defaults["max"] = self.max
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        if self.type == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line",
                "fillOpacity": 20 if self.stack else 0,
                "lineWidth": 1,
                "showPoints": "never",
                "spanNulls": False,
                "stacking": {"group": "A", "mode": "normal" if self.stack else "none"},
                "thresholdsStyle": {"mode": "line" if self.threshold_line else "off"},
            }
        elif self.type == "table":
            defaults["custom"] = {"align": "auto", "cellOptions": {"type": "auto"}}
        if self.type in ("stat", "bargauge") or (self.type == "table" and len(self.steps) > 1):
            defaults["color"] = {"mode": "thresholds"}
        else:
            defaults["color"] = {"mode": "palette-classic"}
        return {
            "datasource": self.datasource,
            "description": self.description,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "gridPos": {"h": h, "w": w, "x": x, "y": y},
            "id": panel_id,
            "options": {**_default_options(self.type), **dict(self.options)},
            "targets": [q.to_dict(chr(ord("A") + i)) for i, q in enumerate(self.queries)],
            "title": self.title,
            "type": self.type,
        }


def _default_options(kind: PanelType) -> dict[str, Any]:
    if kind == "stat":
        return {
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "value_and_name",
        }
    if kind == "timeseries":
        return {
            "legend": {"calcs": [], "displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if kind == "bargauge":
        return {
            "displayMode": "gradient",
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
        }
    if kind == "table":
        return {"cellHeight": "sm", "footer": {"show": False}, "showHeader": True}
    return {}


@dataclass(frozen=True, slots=True)
class Variable:
    """A multi-value query variable over Prometheus label values, with All meaning `.*`."""

    name: str
    label: str
    query: str  # label_values(<selector>, <label>)

    def to_dict(self) -> dict[str, Any]:
        return {
            "allValue": ".*",
            "current": {},
            "datasource": dict(PROMETHEUS),
            "definition": self.query,
            "includeAll": True,
            "label": self.label,
            "multi": True,
            "name": self.name,
            "options": [],
            "query": {"query": self.query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "refresh": 2,  # on time range change: new ICBs appear without a reload
            "sort": 1,
            "type": "query",
        }


@dataclass(frozen=True, slots=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = ()
    time_from: str = "now-6h"
    refresh: str = "1m"
    tags: tuple[str, ...] = ("crisiswatch",)

    def to_dict(self) -> dict[str, Any]:
        return {
            "annotations": {"list": []},
            "description": self.description,
            "editable": False,
            "fiscalYearStartMonth": 3,  # NHS years start in April (0 = January)
            "graphTooltip": 1,
            "id": None,
            "links": [
                {
                    "asDropdown": False,
                    "includeVars": True,
                    "keepTime": True,
                    "tags": ["crisiswatch"],
                    "title": "crisiswatch",
                    "type": "dashboards",
                }
            ],
            "panels": [panel.to_dict(i) for i, panel in enumerate(self.panels, start=1)],
            "refresh": self.refresh,
            "schemaVersion": SCHEMA_VERSION,
            "tags": list(self.tags),
            "templating": {"list": [v.to_dict() for v in self.variables]},
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "timezone": "Europe/London",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "monday",
        }


@dataclass(slots=True)
class Grid:
    """Lays panels out left to right in rows of 24 columns."""

    x: int = 0
    y: int = 0
    row_height: int = 0

    def at(self, w: int, h: int) -> tuple[int, int, int, int]:
        if self.x + w > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        cell = (self.x, self.y, w, h)
        self.x += w
        self.row_height = max(self.row_height, h)
        return cell
