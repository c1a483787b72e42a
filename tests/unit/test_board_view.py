"""The board's HTML from a `Board` value (no services): words for every state, scoping."""

from __future__ import annotations

import pytest

from consumers.board.auth import Viewer
from consumers.board.live import Area, Hour, judge
from consumers.board.query import Board
from consumers.board.view import View, time_left_text
from streams.engine import Rules
from tests.factory import at

NOW = at("2026-03-02T12:00:00+00:00")
RULES = Rules()


def board() -> Board:
    items = [
        judge(RULES, NOW, "ref-late", "ucr_2h", "05", "Y62", "QYG", "RY7", NOW - 150 * 60),
        judge(RULES, NOW, "ref-soon", "ucr_2h", "05", "Y62", "QYG", "RY7", NOW - 100 * 60),
    ]
    return Board(
        NOW,
        [Area("Y62", "North West", waiting=4, at_risk=1, breached=1, stopped_today=3,
              met_today=2)],
        [item for item in items if item is not None],
        [Hour("11:00", 5, 3, 2)],
        NOW - 30,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("minutes", "text"),
    [(0, "0 min left"), (29, "29 min left"), (-1, "1 min over"), (-75, "1 h 15 min over"),
     (-3000, "2 days 2 h over")],
)  # fmt: skip
def test_time_left_in_words(minutes: int, text: str) -> None:
    assert time_left_text(minutes) == text


def test_every_state_is_written_in_words() -> None:
    view = View(RULES, assets=True)
    viewer = Viewer("ann", frozenset({"Y62"}))
    html = view.page(view.context(viewer, None, board(), None))
    assert ">Breached</strong>" in html
    assert ">At risk</strong>" in html
    assert "30 min over" in html
    assert "20 min left" in html
    assert "66.7%" in html  # % met today
    assert "50.0%" in html  # projected: 2 met of (3 stopped + 1 breached)
    assert "Signed in as ann (regions Y62)" in html
    assert "London" not in html  # the filter offers only the viewer's regions


def test_unavailable_and_stale_are_said() -> None:
    view = View(RULES, assets=False)
    viewer = Viewer("local", None)
    fragments = view.fragments(view.context(viewer, None, None, "No database."))
    assert "Data unavailable" in fragments["status"]
    stale = Board(NOW, [], [], [], NOW - 3600)
    fragments = view.fragments(view.context(viewer, None, stale, None))
    assert "No new data" in fragments["status"]
    assert "No referral is at risk or breached now" in fragments["worklist"]
