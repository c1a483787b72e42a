"""The board's HTML: one page and the fragments its live updates replace (Jinja2).

The page is complete without JavaScript (server-rendered, a plain GET form for the region
filter); `static/board.js` then swaps in fragments pushed over Server-Sent Events. Every state
is written in words ("At risk", "Breached", "12 min over"); colour only repeats it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import jinja2

from consumers.board.auth import Viewer
from consumers.board.query import Board, area_codes, region_names
from streams.engine import Rules
from streams.engine.outcome import AT_RISK, BREACHED, CLOCK_REABLEMENT

# Data older than this (seconds) is flagged on the page: the worker or the sources may have
# stopped.
STALE_AFTER_SECONDS: Final = 600
# Rows of the worklist drawn on the page (all of them are in /api/worklist).
PAGE_ROWS: Final = 200
FRAGMENTS: Final = ("status", "tiles", "worklist", "trend")

STATE_WORDS: Final = {AT_RISK: "At risk", BREACHED: "Breached"}
STATE_TAGS: Final = {AT_RISK: "nhsuk-tag--orange", BREACHED: "nhsuk-tag--red"}


class View:
    """Renders a `Board` for a viewer, in the rules' time zone."""

    def __init__(self, rules: Rules, *, assets: bool) -> None:
        self.rules = rules
        self.assets = assets
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("consumers.board", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["clock"] = self.clock
        env.filters["pct"] = _pct_text
        env.filters["left"] = time_left_text
        env.filters["pathway"] = _pathway_text
        env.filters["number"] = lambda n: f"{n:,}"
        env.globals["STATE_WORDS"] = STATE_WORDS
        env.globals["STATE_TAGS"] = STATE_TAGS
        self.env = env

    def clock(self, instant: int | None, today_of: int | None = None) -> str:
        """Local `HH:MM`, with the date when it is not today's."""
        if instant is None:
            return "never"
        local = datetime.fromtimestamp(instant, self.rules.zone)
        if today_of is not None and local.date() == self.rules.local_date(today_of):
            return local.strftime("%H:%M")
        return f"{local:%a} {local.day} {local:%b} {local:%H:%M}"

    def context(
        self, viewer: Viewer, region: str | None, board: Board | None, error: str | None
    ) -> dict[str, Any]:
        names = region_names()
        stale = board is not None and (
            board.last_update is None or board.as_of - board.last_update > STALE_AFTER_SECONDS
        )
        visible = [c for c in area_codes(viewer) if c != "england"]
        return {
            "viewer": viewer,
            "region": region,
            "region_name": names.get(region or "", region),
            "regions": [(code, names[code]) for code in visible],
            "board": board,
            "error": error,
            "stale": stale,
            "stale_minutes": STALE_AFTER_SECONDS // 60,
            "page_rows": PAGE_ROWS,
            "reablement": CLOCK_REABLEMENT,
            "assets": self.assets,
        }

    def page(self, context: dict[str, Any]) -> str:
        return self.env.get_template("page.html").render(context)

    def fragments(self, context: dict[str, Any]) -> dict[str, str]:
        return {name: self.env.get_template(f"_{name}.html").render(context) for name in FRAGMENTS}

    def message(self, title: str, text: str) -> str:
        return self.env.get_template("message.html").render(
            title=title, text=text, assets=self.assets
        )


def _pct_text(value: float | None) -> str:
    return "no clocks stopped" if value is None else f"{value:.1f}%"


def time_left_text(minutes: int) -> str:
    if minutes >= 0:
        return f"{_duration(minutes)} left"
    return f"{_duration(-minutes)} over"


def _duration(minutes: int) -> str:
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {rest} min"
    return f"{hours // 24} days {hours % 24} h"


def _pathway_text(clock_type: str) -> str:
    return "2-day reablement" if clock_type == CLOCK_REABLEMENT else "2-hour response"


__all__ = ["PAGE_ROWS", "STALE_AFTER_SECONDS", "View", "time_left_text"]
