"""Live state now of stored clocks, by the engine's thresholds (no services, no wall clock)."""

from __future__ import annotations

from datetime import time

import pytest

from consumers.board.live import Area, judge, reablement_lookback, today, ucr_offsets
from streams.engine import Clock, Rules
from tests.factory import at

RULES = Rules()


def ucr(start: str, now: str) -> tuple[str, int, int] | None:
    item = judge(RULES, at(now), "r", "ucr_2h", "05", "Y62", "QYG", "RY7", at(start))
    return None if item is None else (item.state, item.minutes_left, item.minutes_waiting)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2026-03-01T11:29:59+00:00", None),  # 89:59: waiting, not on the worklist
        ("2026-03-01T11:30:00+00:00", ("at_risk", 30, 90)),  # 90:00: at risk
        ("2026-03-01T12:00:00+00:00", ("at_risk", 0, 120)),  # 120:00: still only at risk
        ("2026-03-01T12:00:01+00:00", ("breached", -1, 120)),  # 120:01: breached
        ("2026-03-01T13:15:00+00:00", ("breached", -75, 195)),  # 75 minutes over
    ],
)
def test_two_hour_clock(now: str, expected: tuple[str, int, int] | None) -> None:
    assert ucr("2026-03-01T10:00:00+00:00", now) == expected


def day(start: str, now: str) -> str | None:
    item = judge(RULES, at(now), "r", "reablement_2d", "06", "Y62", "QYG", "RY7", at(start))
    return None if item is None else item.state


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # Received Friday 27 March 2026 23:30 GMT; last allowed day Sunday 29 March (BST from
        # 01:00 that day): at risk from 12:00 BST, breached from midnight BST.
        ("2026-03-29T10:59:59+00:00", None),  # 11:59:59 BST
        ("2026-03-29T11:00:00+00:00", "at_risk"),  # 12:00 BST
        ("2026-03-29T22:59:59+00:00", "at_risk"),  # 23:59:59 BST
        ("2026-03-29T23:00:00+00:00", "breached"),  # midnight BST
    ],
)
def test_two_day_clock_by_local_midnights(now: str, expected: str | None) -> None:
    assert day("2026-03-27T23:30:00+00:00", now) == expected


def test_board_uses_the_engines_thresholds() -> None:
    rules = Rules(ucr_at_risk_seconds=3600, ucr_limit_seconds=5400)
    assert ucr_offsets(rules) == Clock.thresholds(rules, "05", 0) == (3600, 5401)


@pytest.mark.parametrize(
    "rules",
    [Rules(), Rules(reablement_days=0), Rules(reablement_at_risk_time=time(0, 0)),
     Rules(timezone="Asia/Kolkata"), Rules(reablement_days=3, timezone="America/St_Johns")],
)  # fmt: skip
def test_reablement_prefilter_never_hides_an_at_risk_clock(rules: Rules) -> None:
    lookback = reablement_lookback(rules)
    start = at("2026-01-01T00:00:00+00:00")
    for minute in range(0, 4 * 24 * 60, 7):  # starts across several local days
        s = start + minute * 60
        at_risk_at, _ = Clock.thresholds(rules, "06", s)
        assert max(0, at_risk_at - s) >= lookback  # (a start after noon on day 0: at once)


def test_today_is_the_local_day() -> None:
    # 00:30 BST on 1 June is 23:30 UTC on 31 May: today began at 23:00 UTC.
    midnight, next_midnight = today(RULES, at("2026-05-31T23:30:00+00:00"))
    assert midnight == at("2026-05-31T23:00:00+00:00")
    assert next_midnight == at("2026-06-01T23:00:00+00:00")


@pytest.mark.parametrize(
    ("stopped", "met", "breached", "pct", "projected"),
    [
        (0, 0, 0, None, None),  # nothing stopped, nothing breached
        (0, 0, 3, None, 0.0),  # nothing stopped yet, three lost already
        (10, 9, 0, 90.0, 90.0),
        (10, 9, 5, 90.0, 60.0),  # open breaches count as not met
        (3, 2, 0, 66.7, 66.7),  # one decimal
    ],
)
def test_percentages(
    stopped: int, met: int, breached: int, pct: float | None, projected: float | None
) -> None:
    area = Area("Y62", "North West", breached=breached, stopped_today=stopped, met_today=met)
    assert area.pct_met_today == pct
    assert area.projected_pct_met_today == projected
