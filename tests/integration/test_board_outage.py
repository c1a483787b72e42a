"""The board when PostgreSQL goes away and comes back: "data unavailable", then recovery.

A real PostgreSQL (the embedded one, so the test can stop and restart it on the same port
and data directory), a real board process, Debian's Chromium.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumers.local.embedded import EmbeddedPostgres, free_port
from consumers.store import migrate
from tests.integration.board_support import board_process, chromium, fetch

pytestmark = pytest.mark.integration


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as running:
        yield running


def test_page_says_data_unavailable_and_recovers(tmp_path: Path, browser: Any) -> None:
    server = EmbeddedPostgres(tmp_path / "pgdata", port=free_port())
    server.start()
    try:
        migrate(server.url)
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO clocks (referral_id, pathway, clock_type, region, icb, provider,"
                " clock_start, breach_at, state, is_open, engine_state)"
                " VALUES ('out-1', 'ucr_2h', '05', 'Y62', 'QYG', 'RY7',"
                " now() - interval '100 minutes', now() + interval '20 minutes', 'at_risk',"
                " true, '{}')"
            )
        with board_process(server.url, tmp_path / "board.log") as board:
            page = browser.new_page()
            page.goto(board.url + "/")
            page.wait_for_selector('tr[data-referral-id="out-1"]')
            page.evaluate("window.__not_reloaded = true")

            server.stop()
            # The open page turns to "data unavailable" by itself...
            page.wait_for_selector('[data-status="unavailable"]', timeout=15000)
            assert "Data unavailable" in page.inner_text("#status")
            # ...and a fresh request gets a clear answer, not a 500 or a traceback.
            status, html = fetch(board.url + "/")
            assert status == 503
            assert "Data unavailable" in html
            assert "Traceback" not in html
            status, body = fetch(board.url + "/api/worklist")
            assert status == 503
            assert "data unavailable" in body
            assert fetch(board.url + "/health")[0] == 200

            server.start()
            page.wait_for_selector('[data-status="live"], [data-status="stale"]', timeout=20000)
            page.wait_for_selector('tr[data-referral-id="out-1"]', timeout=5000)
            assert page.evaluate("window.__not_reloaded") is True
            deadline = time.monotonic() + 10
            while fetch(board.url + "/")[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.25)
            assert fetch(board.url + "/")[0] == 200
            page.close()
    finally:
        server.stop()
