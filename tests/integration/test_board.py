"""The board end to end: a real worker, broker and PostgreSQL, a real board process, and
Debian's headless Chromium (Playwright) with axe-core.

One system for the module: referrals are published through Kafka, the worker writes their
clocks, the board reads them. Expected states come from the engine itself, judged now.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumers.kafka.admin import create_topics
from consumers.local.embedded import EmbeddedBroker
from consumers.store import migrate
from streams.engine import Clock, Event, Rules
from streams.engine.event import CONTACT, RECEIVED, TRIAGED
from streams.names import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC
from tests.integration.board_support import (
    BoardProcess,
    axe_violations,
    chromium,
    event,
    fetch,
    fetch_json,
    first_sse_message,
    received,
    seen,
)
from tests.support import crisiswatch, produce, wait_for

pytestmark = pytest.mark.integration

MIN = 60
NOW = time.time()

# (referral id, events): region Y62 unless said otherwise.
SCENARIO: dict[str, list[bytes]] = {
    "brd-waiting": [received("brd-waiting", NOW - 10 * MIN)],
    "brd-risk": [received("brd-risk", NOW - 100 * MIN)],
    "brd-risk-chase": [received("brd-risk-chase", NOW - 97 * MIN)],
    "brd-london-risk": [received("brd-london-risk", NOW - 95 * MIN, region="Y56", icb="QMJ")],
    "brd-london-breach": [received("brd-london-breach", NOW - 160 * MIN, region="Y56", icb="QMJ")],
    "brd-breach": [received("brd-breach", NOW - 150 * MIN)],
    "brd-met": [received("brd-met", NOW - 60 * MIN), seen("brd-met", NOW - 20 * MIN)],
    "brd-not-met": [received("brd-not-met", NOW - 200 * MIN), seen("brd-not-met", NOW - 30 * MIN)],
    "brd-day-breach": [received("brd-day-breach", NOW - 4 * 86400, pathway="reablement_2d")],
    "brd-day-wait": [received("brd-day-wait", NOW - 60 * MIN, pathway="reablement_2d")],
    "brd-excluded": [
        received("brd-excluded", NOW - 130 * MIN),
        event(
            "triaged",
            "brd-excluded",
            NOW - 125 * MIN,
            subject_to_standard=False,
            exclusion_reason="patient_requested_later",
        ),
    ],
    "brd-nowhere": [received("brd-nowhere", NOW - 125 * MIN, region=None, icb="QZZ")],
}
LONDON = {"brd-london-risk", "brd-london-breach"}


def engine_states(lines: list[bytes], now: int) -> dict[str, str]:
    """Each referral's state at `now`, by the engine (not by the board)."""
    clocks: dict[str, Clock] = {}
    for line in lines:
        raw = json.loads(line)
        data = raw["data"]
        t = int(time.mktime(time.strptime(raw["time"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone)
        kind = {"referral.received": RECEIVED, "referral.contact": CONTACT,
                "referral.triaged": TRIAGED}[raw["type"]]  # fmt: skip
        clock = clocks.setdefault(data["referral_id"], Clock(data["referral_id"]))
        clock.merge(
            Event(
                raw["id"], kind, t, data["referral_id"],
                pathway=data.get("pathway"), provider=data.get("provider"),
                icb=data.get("icb"), region=data.get("region"),
                contact_id=data.get("contact_id"), mode=data.get("mode"),
                attended=data.get("attended"),
                subject_to_standard=data.get("subject_to_standard"),
                exclusion_reason=data.get("exclusion_reason"),
            )
        )  # fmt: skip
    states = {}
    for rid, clock in clocks.items():
        outcome, _ = clock.evaluate(Rules(), now)
        assert outcome is not None
        states[rid] = outcome.state
    return states


class WorkerProcess:
    def __init__(self, kafka: str, url: str, log: Path) -> None:
        env = {**os.environ, "CRISISWATCH_PSEUDONYM_KEY": "test-key-0123456789abcdef",
               "CRISISWATCH_METRICS_PORT": "0"}  # fmt: skip
        with log.open("ab") as handle:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [crisiswatch(), "worker", "--kafka", kafka, "--database-url", url],
                stdout=handle, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture(scope="module")
def system(
    new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("board")
    url = new_database()
    migrate(url)
    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, {EVENTS_TOPIC: 2, OUTCOMES_TOPIC: 2, DLQ_TOPIC: 1})
        worker = WorkerProcess(broker.bootstrap, url, tmp / "worker.log")
        open_board = BoardProcess(url, tmp / "board.log")
        proxied = BoardProcess(url, tmp / "board-proxy.log", "--auth", "proxy")
        try:
            lines = [line for events in SCENARIO.values() for line in events]
            produce(broker.bootstrap, lines)

            def stored() -> bool:
                with psycopg.connect(url) as conn:
                    row = conn.execute(
                        "SELECT count(*) FROM clocks WHERE referral_id LIKE 'brd-%%'"
                        " AND state <> 'pending' AND (referral_id NOT IN"
                        " ('brd-met', 'brd-not-met', 'brd-excluded') OR NOT is_open)"
                    ).fetchone()
                return row is not None and row[0] == len(SCENARIO)

            wait_for(stored, 90, "the worker to store the scenario's clocks")
            yield {
                "url": url, "kafka": broker.bootstrap, "board": open_board.url,
                "proxy": proxied.url, "lines": lines, "worker": worker, "tmp": tmp,
            }  # fmt: skip
        finally:
            open_board.stop()
            proxied.stop()
            worker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as running:
        yield running


def page_rows(page: Any) -> dict[str, str]:
    rows = page.locator("#worklist tr[data-referral-id]")
    return {
        rows.nth(i).get_attribute("data-referral-id"): rows.nth(i).get_attribute("data-state")
        for i in range(rows.count())
    }


def test_page_lists_exactly_what_the_engine_says_is_at_risk_or_breached(
    system: dict[str, Any], browser: Any
) -> None:
    page = browser.new_page()
    page.goto(system["board"] + "/")
    now = int(time.time())
    expected = {
        rid: state
        for rid, state in engine_states(system["lines"], now).items()
        if state in ("at_risk", "breached")
    }
    assert expected == {
        "brd-risk": "at_risk", "brd-risk-chase": "at_risk", "brd-london-risk": "at_risk",
        "brd-london-breach": "breached", "brd-breach": "breached",
        "brd-day-breach": "breached", "brd-nowhere": "breached",
    }  # fmt: skip
    assert {k: v for k, v in page_rows(page).items() if k.startswith("brd-")} == expected
    # State in words, never colour alone; soonest deadline first.
    first = page.locator("#worklist tbody tr").first
    assert first.get_attribute("data-referral-id") == "brd-day-breach"
    assert "Breached" in first.inner_text()
    assert "over" in first.inner_text()
    api = fetch_json(system["board"] + "/api/worklist")
    assert {i["referral_id"]: i["state"] for i in api["items"]} == expected
    deadlines = [i["deadline"] for i in api["items"]]
    assert deadlines == sorted(deadlines)
    page.close()


def test_tiles_equal_the_summary_api_and_an_independent_count(
    system: dict[str, Any], browser: Any
) -> None:
    page = browser.new_page()
    page.goto(system["board"] + "/")
    summary = fetch_json(system["board"] + "/api/summary")
    with psycopg.connect(system["url"]) as conn:
        rows = conn.execute(
            """
            SELECT coalesce(region, 'unknown'),
              count(*) FILTER (WHERE clock_stop IS NULL AND now() - clock_start < '90 min'),
              count(*) FILTER (WHERE clock_stop IS NULL AND now() - clock_start >= '90 min'
                               AND now() - clock_start <= '120 min'),
              count(*) FILTER (WHERE clock_stop IS NULL AND now() - clock_start > '120 min'),
              count(*) FILTER (WHERE clock_stop >= date_trunc('day', now() AT TIME ZONE
                               'Europe/London') AT TIME ZONE 'Europe/London'),
              count(*) FILTER (WHERE state = 'met' AND clock_stop >= date_trunc('day',
                               now() AT TIME ZONE 'Europe/London') AT TIME ZONE 'Europe/London')
            FROM clocks WHERE clock_type = '05' GROUP BY 1
            """
        ).fetchall()
    counted: dict[str, list[int]] = {r[0]: list(r[1:]) for r in rows}
    counted["england"] = [sum(c) for c in zip(*counted.values(), strict=True)]
    fields = ["waiting", "at_risk", "breached", "stopped_today", "met_today"]
    assert [a["code"] for a in summary["areas"]] == [
        "england", "Y56", "Y58", "Y59", "Y60", "Y61", "Y62", "Y63",
    ]  # fmt: skip
    for area in summary["areas"]:
        assert [area[f] for f in fields] == counted.get(area["code"], [0] * 5), area["code"]
        tile = page.locator(f'#tiles [data-area="{area["code"]}"]')
        for field in ("waiting", "at_risk", "breached", "stopped_today"):
            text = tile.locator(f'[data-field="{field}"]').inner_text()
            assert int(text.replace(",", "")) == area[field], (area["code"], field)
        pct = tile.locator('[data-field="pct_met_today"]').inner_text()
        projected = tile.locator('[data-field="projected_pct_met_today"]').inner_text()
        for text, value in (
            (pct, area["pct_met_today"]),
            (projected, area["projected_pct_met_today"]),
        ):
            assert text == ("no clocks stopped" if value is None else f"{value:.1f}%")
    england = summary["areas"][0]
    # Projected counts open breached clocks as not met: 1 met of (2 stopped + 3 breached).
    assert (england["stopped_today"], england["met_today"], england["breached"]) == (2, 1, 3)
    assert england["pct_met_today"] == 50.0
    assert england["projected_pct_met_today"] == 20.0
    page.close()


def test_axe_finds_no_serious_or_critical_violations(system: dict[str, Any], browser: Any) -> None:
    page = browser.new_page()
    page.goto(system["board"] + "/")
    assert page.locator("#worklist tbody tr").count() > 0
    assert axe_violations(page) == []
    page.goto(system["board"] + "/?region=Y99")
    assert axe_violations(page) == []
    page.close()


def test_keyboard_filters_by_region_and_the_filter_persists_in_the_url(
    system: dict[str, Any], browser: Any
) -> None:
    page = browser.new_page()
    page.goto(system["board"] + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "region-filter":
            break
    assert page.evaluate("document.activeElement.id") == "region-filter"
    page.keyboard.type("North West")
    page.keyboard.press("Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("/?region=Y62")
    rows = page_rows(page)
    assert rows
    assert not set(rows) & (LONDON | {"brd-nowhere"})
    assert page.locator("#region-filter").input_value() == "Y62"
    page.close()


def test_contact_removes_the_row_live_without_a_reload(
    system: dict[str, Any], browser: Any
) -> None:
    page = browser.new_page()
    page.goto(system["board"] + "/")
    assert "brd-risk-chase" in page_rows(page)
    page.evaluate("window.__not_reloaded = true")
    produce(system["kafka"], [seen("brd-risk-chase", time.time() - 30)])
    page.wait_for_selector('tr[data-referral-id="brd-risk-chase"]', state="detached", timeout=5000)
    assert page.evaluate("window.__not_reloaded") is True
    page.close()


def test_clock_crossing_90_minutes_turns_at_risk_on_the_open_page(
    system: dict[str, Any], browser: Any
) -> None:
    lead = 20  # seconds until the clock reaches 90 minutes
    produce(system["kafka"], [received("brd-crossing", time.time() - 90 * MIN + lead)])
    deadline = time.monotonic() + lead

    def stored() -> bool:
        with psycopg.connect(system["url"]) as conn:
            row = conn.execute(
                "SELECT state FROM clocks WHERE referral_id = 'brd-crossing'"
            ).fetchone()
        return row is not None and row[0] == "waiting"

    wait_for(stored, 15, "the worker to store the crossing clock")
    # From here no event and no worker: the board alone must see the clock cross 90 minutes.
    system["worker"].stop()
    page = browser.new_page()
    page.goto(system["board"] + "/")
    page.evaluate("window.__not_reloaded = true")
    assert time.monotonic() < deadline, "too slow to observe the clock before it crossed"
    assert "brd-crossing" not in page_rows(page)
    page.wait_for_selector(
        'tr[data-referral-id="brd-crossing"][data-state="at_risk"]', timeout=(lead + 8) * 1000
    )
    assert time.monotonic() >= deadline - 1
    assert page.evaluate("window.__not_reloaded") is True
    with psycopg.connect(system["url"]) as conn:
        row = conn.execute("SELECT state FROM clocks WHERE referral_id = 'brd-crossing'").fetchone()
    assert row == ("waiting",)  # the stored state is stale; the board judged it now
    page.close()


# -- access: --auth proxy ------------------------------------------------------------------------

Y62 = {"X-Forwarded-User": "nw.lead@example.nhs.uk", "X-Forwarded-Groups": "staff,crisiswatch-region-Y62"}  # fmt: skip


@pytest.mark.parametrize("path", ["/", "/api/summary", "/api/worklist", "/events"])
def test_proxy_mode_401_without_user_and_403_without_group(
    system: dict[str, Any], path: str
) -> None:
    status, body = fetch(system["proxy"] + path)
    assert status == 401, body
    assert "X-Forwarded-User" in body
    status, body = fetch(system["proxy"] + path, {"X-Forwarded-User": "someone"})
    assert status == 403, body
    status, _ = fetch(
        system["proxy"] + path,
        {"X-Forwarded-User": "someone", "X-Forwarded-Groups": "crisiswatch-region-Y99,other"},
    )
    assert status == 403


def test_region_user_never_receives_another_region(system: dict[str, Any], browser: Any) -> None:
    base = system["proxy"]
    summary = fetch_json(base + "/api/summary", Y62)
    assert [a["code"] for a in summary["areas"]] == ["Y62"]
    worklist = fetch_json(base + "/api/worklist", Y62)
    assert worklist["items"]
    assert {i["region"] for i in worklist["items"]} == {"Y62"}
    for path in ("/?region=Y56", "/api/worklist?region=Y56", "/events?region=Y56"):
        status, body = fetch(base + path, Y62)
        assert status == 403, path
        assert "brd-london" not in body
    status, html = fetch(base + "/", Y62)
    assert status == 200
    stream = json.dumps(first_sse_message(base + "/events", Y62))
    for text in (html, stream, json.dumps(summary), json.dumps(worklist)):
        assert "Y56" not in text
        assert "London" not in text
        assert "brd-london" not in text
        assert "brd-nowhere" not in text
    assert "brd-risk" in html
    assert "brd-risk" in stream
    # In the browser, live updates included.
    context = browser.new_context(extra_http_headers=Y62)
    page = context.new_page()
    page.goto(base + "/")
    page.wait_for_function("document.body.hasAttribute('data-as-of')", timeout=10000)
    rows = page_rows(page)
    assert rows
    assert not set(rows) & (LONDON | {"brd-nowhere"})
    content = page.content()
    assert "Y56" not in content
    assert "London" not in content
    context.close()
    # An England user sees everything.
    england = {
        "X-Forwarded-User": "scc@example.nhs.uk",
        "X-Forwarded-Groups": "crisiswatch-england",
    }
    items = fetch_json(base + "/api/worklist", england)["items"]
    assert {i["referral_id"] for i in items} >= LONDON


def test_bad_input_gets_a_clear_answer(system: dict[str, Any]) -> None:
    base = system["board"]
    status, body = fetch(base + "/?region=Y99")
    assert status == 404
    assert "unknown region &#39;Y99&#39;: one of Y56" in body
    assert "Traceback" not in body
    status, body = fetch(base + "/api/worklist?region=%3Cscript%3E")
    assert status == 404
    assert json.loads(body)["error"].startswith("unknown region")
    status, body = fetch(base + "/api/worklist?region=Y62&region=Y56")
    assert status == 400
    # Malformed proxy headers: control characters, a repeated user.
    status, body = fetch(
        system["proxy"] + "/api/summary",
        {"X-Forwarded-User": "a", "X-Forwarded-Groups": "crisiswatch-england\x7f"},
    )
    assert status == 400  # refused by the HTTP parser itself
    assert "X-Forwarded-Groups" in body
    status, body = fetch(
        system["proxy"] + "/api/summary",
        {"X-Forwarded-User": "jos\u00e9", "X-Forwarded-Groups": "crisiswatch-england"},
    )
    assert status == 400
    assert json.loads(body) == {
        "error": "malformed X-Forwarded-User header: control or non-ASCII characters"
    }
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(system["proxy"])
    conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=10)
    conn.putrequest("GET", "/api/summary")
    conn.putheader("X-Forwarded-User", "a")
    conn.putheader("X-Forwarded-User", "b")
    conn.putheader("X-Forwarded-Groups", "crisiswatch-england")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 400
    assert b"more than once" in response.read()
    conn.close()


def test_auth_none_is_refused_beyond_loopback(system: dict[str, Any]) -> None:
    result = subprocess.run(
        [crisiswatch(), "board", "--database-url", system["url"], "--auth", "none",
         "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.match(r"crisiswatch: --auth none is refused on 0\.0\.0\.0", lines[0])
    assert result.stdout == ""
