"""`crisiswatch demo` serves the board: its address comes first, and it shows live data."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from consumers.local.embedded import reap
from tests.integration.board_support import chromium, fetch, fetch_json
from tests.support import crisiswatch

pytestmark = pytest.mark.integration


def test_demo_prints_the_board_address_first_and_serves_it(
    new_database: Callable[[], str],
) -> None:
    process = subprocess.Popen(
        [crisiswatch(), "demo", "--database-url", new_database(), "--duration", "60",
         "--refresh", "5", "--speed", "20", "--seed", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "CRISISWATCH_METRICS_PORT": "0"},
    )  # fmt: skip
    assert process.stdout is not None
    try:
        ready, _, _ = select.select([process.stdout], [], [], 30)
        first = process.stdout.readline().decode() if ready else ""
        assert first.startswith("demo: operations board at http://127.0.0.1:"), first
        url = first.split(" at ", 1)[1].split()[0].rstrip("/")
        end = time.monotonic() + 60

        def england() -> dict[str, Any] | None:
            if fetch(url + "/health")[0] != 200:
                return None
            areas = fetch_json(url + "/api/summary")["areas"]
            return dict(areas[0]) if areas[0]["breached"] else None

        area = None
        while area is None and time.monotonic() < end:
            try:
                area = england()
            except OSError:
                area = None
            time.sleep(1)
        assert area is not None, "the board showed no breached clocks within a minute"
        assert area["projected_pct_met_today"] < area["pct_met_today"]
        with chromium() as browser:
            page = browser.new_page()
            page.goto(url + "/")
            assert page.locator("#worklist tbody tr").count() > 0
            assert "Breached" in page.inner_text("#worklist")
            page.close()
        out, _ = process.communicate(timeout=120)
        text = out.decode()
        assert "projected % met" in text
        assert "counting every open breached clock as not met" in text
        assert process.returncode == 0, text
    finally:
        reap(process, 20)
        process.stdout.close()
