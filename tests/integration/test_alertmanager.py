"""Per-referral alerts against a real Alertmanager (Debian's `prometheus-alertmanager`).

Each test starts its own Alertmanager on a free loopback port, with no clustering, routing
everything to a webhook receiver that the test runs in a thread. A missing binary is a
failure, never a skip.

Referral times are relative to the real wall clock: Alertmanager judges whether an alert is
active by its own clock, so an at-risk referral here was received 95 real minutes ago.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from consumers.local.embedded import free_port
from consumers.observe.alertmanager import (
    ALERT_AT_RISK,
    ALERT_BREACHED,
    WITHDRAWN,
    AlertmanagerNotifier,
    format_deadline,
)
from streams.engine import Change, Engine, Rules
from tests.factory import apply_many, at, contact, received
from tests.support import Webhook, stop_process

pytestmark = pytest.mark.integration

RULES = Rules()
LONDON = ZoneInfo("Europe/London")
MINUTE = 60
DASHBOARD = "http://grafana.test/d/referrals/referral"
STARTUP_TIMEOUT_S = 20.0
Json = dict[str, Any]


# -- a webhook receiver and an Alertmanager ------------------------------------------------------


def alertmanager_binary() -> str:
    # Debian installs it as `prometheus-alertmanager`; upstream tarballs as `alertmanager`.
    for name in ("alertmanager", "prometheus-alertmanager"):
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.fail("Alertmanager is required: apt-get install prometheus-alertmanager")


class Alertmanager:
    """One Alertmanager process; stop() and start() again keep its port and storage."""

    def __init__(self, directory: Path, webhook_url: str) -> None:
        self.binary = alertmanager_binary()
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "am.yml"
        self.config.write_text(
            "route:\n"
            "  receiver: hook\n"
            "  group_by: [alertname, region]\n"
            "  group_wait: 0s\n"
            "  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            "receivers:\n"
            "  - name: hook\n"
            "    webhook_configs:\n"
            f"      - url: {webhook_url}\n"
            "        send_resolved: true\n"
        )
        self.log = directory / "alertmanager.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config}",
                    f"--storage.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"alertmanager exited at start:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"alertmanager not ready in {STARTUP_TIMEOUT_S}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        stop_process(process)

    def alerts(self) -> list[Json]:
        """Active alerts (GET /api/v2/alerts): Alertmanager leaves resolved ones out."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as response:
            alerts: list[Json] = json.load(response)
            return alerts

    def active(self) -> dict[tuple[str, str], Json]:
        """Active alerts by (referral id, alertname)."""
        return {
            (a["labels"]["referral_id"], a["labels"]["alertname"]): a
            for a in self.alerts()
            if "referral_id" in a["labels"]
        }


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: Webhook) -> Iterator[Alertmanager]:
    am = Alertmanager(tmp_path, webhook.url + "/hook")
    am.start()
    yield am
    am.stop()


# -- helpers -------------------------------------------------------------------------------------


def run(coro: Awaitable[None]) -> None:
    async def main() -> None:
        await coro

    asyncio.run(main())


async def eventually(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll `check` (run in a thread: it may do blocking HTTP) until true, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        if await asyncio.to_thread(check):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(0.1)


def notifier(am_url: str, **kwargs: Any) -> AlertmanagerNotifier:
    return AlertmanagerNotifier(am_url, rules=RULES, **kwargs)


def hooked(webhook: Webhook, referral_id: str, alertname: str, status: str) -> Callable[[], bool]:
    return lambda: bool(webhook.received(referral_id, alertname, status))


def one(change: Change | None) -> list[Change]:
    assert change is not None
    return [change]


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utc", "shown"),
    [
        ("2026-02-03T14:05:00Z", "14:05 Tue 03 Feb"),  # winter: GMT = UTC
        ("2026-07-01T13:05:59Z", "14:05 Wed 01 Jul"),  # summer: BST = UTC+1, minutes truncated
        ("2026-03-28T23:59:59Z", "23:59 Sat 28 Mar"),  # last second before the spring change
    ],
)
def test_deadline_is_local_time(utc: str, shown: str) -> None:
    assert format_deadline(at(utc.replace("Z", "+00:00")), LONDON) == shown


# -- against Alertmanager ------------------------------------------------------------------------


def test_at_risk_fires_with_labels_and_annotations(
    alertmanager: Alertmanager, webhook: Webhook
) -> None:
    now = int(time.time())
    start = now - 95 * MINUTE
    engine = Engine(RULES)
    changes = one(engine.apply(received("R-RISK-1", start, region="Y61", icb="QHL"), now))
    assert changes[0].outcome.state == "at_risk"

    async def scenario() -> None:
        am = notifier(alertmanager.url, dashboard_url=DASHBOARD)
        await am.start()
        try:
            await am.on_changes(changes, now)
            await eventually(
                lambda: ("R-RISK-1", ALERT_AT_RISK) in alertmanager.active(), "at-risk alert"
            )
            await eventually(
                lambda: bool(webhook.received("R-RISK-1", ALERT_AT_RISK, "firing")),
                "webhook notification",
            )
            assert am.firing == 1
            assert am.posted >= 1
            assert am.failed == 0
        finally:
            await am.stop()

    run(scenario())
    alert = alertmanager.active()["R-RISK-1", ALERT_AT_RISK]
    assert alert["labels"] == {
        "alertname": "ReferralAtRisk",
        "severity": "page",
        "region": "Y61",
        "icb": "QHL",
        "pathway": "ucr_2h",
        "referral_id": "R-RISK-1",
    }
    notes = alert["annotations"]
    link = f"{DASHBOARD}?var-referral=R-RISK-1"
    assert notes["minutes_waiting"] in {"95", "96"}  # at post time
    deadline = datetime.fromtimestamp(start + 7200, LONDON).strftime("%H:%M %a %d %b")
    assert notes["deadline"] == deadline
    assert notes["dashboard"] == link
    assert alert["generatorURL"] == link
    assert "R-RISK-1" in notes["summary"]
    assert deadline in notes["summary"]
    assert "face to face" in notes["action"]
    assert "provider RY7" in notes["description"]
    # It began when the clock turned at risk (90 minutes), not when it was posted; and it
    # expires on its own 4 resend intervals after the post unless re-posted.
    assert instant(alert["startsAt"]).timestamp() == start + 90 * MINUTE
    assert 200 <= instant(alert["endsAt"]).timestamp() - now <= 260
    hooked = webhook.received("R-RISK-1", ALERT_AT_RISK, "firing")[0]
    assert hooked["annotations"]["deadline"] == deadline


def test_breach_replaces_the_at_risk_alert(alertmanager: Alertmanager, webhook: Webhook) -> None:
    now = int(time.time())
    start = now - 125 * MINUTE
    engine = Engine(RULES)
    at_risk = one(engine.apply(received("R-BREACH-1", start), start + 95 * MINUTE))
    breached = engine.advance(now)
    assert [c.outcome.state for c in breached] == ["breached"]
    # A reablement clock received three days ago is breached: a ticket, not a page.
    reablement = one(engine.apply(received("R-REABLE-1", now - 3 * 86400, "reablement_2d"), now))
    assert reablement[0].outcome.state == "breached"

    async def scenario() -> None:
        am = notifier(alertmanager.url)
        await am.start()
        try:
            await am.on_changes(at_risk, start + 95 * MINUTE)
            await eventually(
                lambda: ("R-BREACH-1", ALERT_AT_RISK) in alertmanager.active(), "at risk"
            )
            await am.on_changes(breached + reablement, now)
            await eventually(
                lambda: (
                    set(alertmanager.active())
                    == {("R-BREACH-1", ALERT_BREACHED), ("R-REABLE-1", ALERT_BREACHED)}
                ),
                "breached alerts, and the at-risk one resolved",
            )
            await eventually(
                lambda: bool(webhook.received("R-BREACH-1", ALERT_AT_RISK, "resolved")),
                "webhook: at risk resolved",
            )
            await eventually(
                lambda: bool(webhook.received("R-BREACH-1", ALERT_BREACHED, "firing")),
                "webhook: breached firing",
            )
            assert am.firing == 2
        finally:
            await am.stop()

    run(scenario())
    active = alertmanager.active()
    page = active["R-BREACH-1", ALERT_BREACHED]
    assert page["labels"]["severity"] == "page"
    assert instant(page["startsAt"]).timestamp() == start + 7201  # breached from 120:01
    assert page["annotations"]["minutes_waiting"] in {"125", "126"}
    assert "dashboard" not in page["annotations"]  # no dashboard configured
    assert not page.get("generatorURL")
    ticket = active["R-REABLE-1", ALERT_BREACHED]
    assert ticket["labels"]["severity"] == "ticket"
    assert ticket["labels"]["pathway"] == "reablement_2d"
    assert ticket["annotations"]["deadline"].startswith("23:59 ")  # end of the last day


def test_clock_stops_resolve(alertmanager: Alertmanager, webhook: Webhook) -> None:
    now = int(time.time())
    engine = Engine(RULES)
    t_met = now - 100 * MINUTE  # at risk; seen at 98 minutes: met
    t_late = now - 130 * MINUTE  # breached; seen at 125 minutes: not met (the visit happened)
    t_back = now - 130 * MINUTE  # breached; a contact at 110 minutes recorded late: withdrawn
    fire = [
        *one(engine.apply(received("R-MET", t_met), now - 60)),
        *one(engine.apply(received("R-LATE", t_late), now - 60)),
        *one(engine.apply(received("R-BACK", t_back), now - 60)),
    ]
    stops = [
        *one(engine.apply(contact("R-MET", t_met + 98 * MINUTE), now)),
        *one(engine.apply(contact("R-LATE", t_late + 125 * MINUTE), now)),
        *one(engine.apply(contact("R-BACK", t_back + 110 * MINUTE), now)),
    ]
    assert [c.outcome.state for c in stops] == ["met", "not_met", "met"]
    assert stops[2].breach_withdrawn

    async def scenario() -> None:
        am = notifier(alertmanager.url)
        await am.start()
        try:
            await am.on_changes(fire, now - 60)
            await eventually(lambda: len(alertmanager.active()) == 3, "three alerts firing")
            for ref, name in [
                ("R-MET", ALERT_AT_RISK),
                ("R-LATE", ALERT_BREACHED),
                ("R-BACK", ALERT_BREACHED),
            ]:
                await eventually(hooked(webhook, ref, name, "firing"), f"webhook: {ref} firing")
            await am.on_changes(stops, now)
            await eventually(lambda: not alertmanager.active(), "every alert resolved")
            for ref, name in [
                ("R-MET", ALERT_AT_RISK),
                ("R-LATE", ALERT_BREACHED),
                ("R-BACK", ALERT_BREACHED),
            ]:
                await eventually(hooked(webhook, ref, name, "resolved"), f"webhook: {ref} resolved")
            assert am.firing == 0
            assert am.pending == 0
        finally:
            await am.stop()

    run(scenario())
    back = webhook.received("R-BACK", ALERT_BREACHED, "resolved")[-1]
    assert back["annotations"]["resolution"] == WITHDRAWN
    assert instant(back["endsAt"]).timestamp() == now
    assert back["annotations"]["action"] == "Nothing more for this page."
    late = webhook.received("R-LATE", ALERT_BREACHED, "resolved")[-1]
    assert late["annotations"]["resolution"] == "seen face to face after the deadline"


def test_outage_then_current_state_is_delivered(
    alertmanager: Alertmanager, webhook: Webhook
) -> None:
    now = int(time.time())
    start = now - 125 * MINUTE
    engine = Engine(RULES)
    first = one(engine.apply(received("R-OUT-A", start), start + 95 * MINUTE))
    during = [
        *engine.advance(now),  # A: at risk -> breached
        *one(engine.apply(received("R-OUT-B", now - 92 * MINUTE), now)),  # B: at risk
        *one(engine.apply(received("R-OUT-C", now - 93 * MINUTE), now)),  # C: at risk ...
        *one(engine.apply(contact("R-OUT-C", now - 1 * MINUTE), now)),  # ... and then met
    ]

    async def scenario() -> None:
        am = notifier(alertmanager.url)
        await am.start()
        try:
            await am.on_changes(first, start + 95 * MINUTE)
            await eventually(lambda: ("R-OUT-A", ALERT_AT_RISK) in alertmanager.active(), "A")
            await asyncio.to_thread(alertmanager.stop)

            began = time.perf_counter()
            await am.on_changes(during, now)
            assert time.perf_counter() - began < 0.1  # returns at once, outage or not

            await eventually(lambda: am.failed >= 2, "failed posts while it is down")
            posted = am.posted
            await asyncio.to_thread(alertmanager.start)  # same port, same storage
            await eventually(
                lambda: (
                    set(alertmanager.active())
                    == {("R-OUT-A", ALERT_BREACHED), ("R-OUT-B", ALERT_AT_RISK)}
                ),
                "the current state after the outage",
                timeout=60,
            )
            assert am.posted > posted
            assert am.firing == 2
            await eventually(lambda: am.pending == 0, "resolutions delivered")
        finally:
            await am.stop()

    run(scenario())


def test_memory_bound_drops_oldest_resolutions(alertmanager: Alertmanager) -> None:
    now = int(time.time())
    engine = Engine(RULES)

    def at_risk(ref: str) -> list[Change]:
        return one(engine.apply(received(ref, now - 95 * MINUTE), now))

    def met(ref: str) -> list[Change]:
        return one(engine.apply(contact(ref, now - 2 * MINUTE), now))

    async def scenario() -> None:
        # Not started: like an Alertmanager that cannot be reached, nothing gets delivered.
        am = notifier(alertmanager.url, max_pending=5)
        olds = [f"R-OLD-{i}" for i in range(5)]
        for ref in olds:
            await am.on_changes(at_risk(ref), now)
        for ref in olds:
            await am.on_changes(met(ref), now)
        assert (am.firing, am.pending, am.dropped) == (0, 5, 0)

        # Three new pages: 3 firing + 5 resolutions > 5, so the 3 oldest resolutions go.
        await am.on_changes([c for r in ("R-NEW-0", "R-NEW-1", "R-NEW-2") for c in at_risk(r)], now)
        assert (am.firing, am.pending, am.dropped) == (3, 2, 3)
        assert am.queued_resolutions() == [(ALERT_AT_RISK, "R-OLD-3"), (ALERT_AT_RISK, "R-OLD-4")]

        # Firing alerts are never dropped (they mirror open clocks): resolutions give way.
        await am.on_changes([c for r in ("R-NEW-3", "R-NEW-4", "R-NEW-5") for c in at_risk(r)], now)
        assert (am.firing, am.pending, am.dropped) == (6, 0, 5)

        await am.start()
        try:
            await eventually(lambda: len(alertmanager.active()) == 6, "six pages delivered")
            assert am.posted == 6
            # Batched: one request carries them all (a re-post may follow under load).
            assert 1 <= am.requests <= 2
        finally:
            await am.stop()

    run(scenario())
    assert {ref for ref, _ in alertmanager.active()} == {f"R-NEW-{i}" for i in range(6)}


def test_a_refused_batch_is_logged_without_what_alertmanager_quotes_back(
    alertmanager: Alertmanager, caplog: pytest.LogCaptureFixture
) -> None:
    """Alertmanager's 4xx text quotes the refused values (here the generatorURL, which names
    the referral): referral ids go to DEBUG only (consumers/observe/logs.py), never to the ERROR line."""
    now = int(time.time())
    engine = Engine(RULES)
    changes = one(engine.apply(received("R-QUOTED-1", now - 95 * MINUTE), now))
    caplog.set_level(logging.DEBUG, logger="crisiswatch.alertmanager")

    async def scenario() -> None:
        # An escape Go's URL parser refuses: Alertmanager answers 422 quoting the generatorURL.
        am = notifier(alertmanager.url, dashboard_url="http://grafana.test/d/%zz")
        await am.start()
        try:
            await am.on_changes(changes, now)
            await eventually(lambda: am.rejected >= 1, "the batch refused")
        finally:
            await am.stop()

    run(scenario())
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert refused
    assert all(r.levelno == logging.ERROR and "422" in r.getMessage() for r in refused)
    above_debug = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    assert not [m for m in above_debug if "R-QUOTED-1" in m], above_debug
    # The answer itself is still there for whoever debugs it.
    assert any(
        r.levelno == logging.DEBUG and "R-QUOTED-1" in r.getMessage() for r in caplog.records
    )


def test_a_failing_alertmanager_is_logged_without_its_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 5xx (retried) is a WARNING with the status only: a proxy's error page may echo the
    request body, referral ids included."""

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"upstream down, request was: " + body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    now = int(time.time())
    changes = one(Engine(RULES).apply(received("R-ECHOED-1", now - 95 * MINUTE), now))
    caplog.set_level(logging.DEBUG, logger="crisiswatch.alertmanager")

    async def scenario() -> None:
        am = notifier(f"http://127.0.0.1:{server.server_address[1]}")
        await am.start()
        try:
            await am.on_changes(changes, now)
            await eventually(lambda: am.failed >= 1, "a failed post")
        finally:
            await am.stop()

    try:
        run(scenario())
    finally:
        server.shutdown()
        server.server_close()
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert failed
    assert any(r.levelno == logging.WARNING and "503" in r.getMessage() for r in failed)
    above_debug = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    assert not [m for m in above_debug if "R-ECHOED-1" in m], above_debug


def test_on_changes_never_blocks() -> None:
    """10,000 changes against an unreachable Alertmanager: in-memory work only."""
    now = int(time.time())
    engine = Engine(RULES)
    events = [received(f"R-{i:05d}", now - 95 * MINUTE - i % 600) for i in range(10_000)]
    changes = apply_many(engine, events, now)
    assert len(changes) == 10_000
    closed = apply_many(engine, [contact(f"R-{i:05d}", now - 60) for i in range(10_000)], now)

    async def scenario() -> None:
        am = notifier(f"http://127.0.0.1:{free_port()}", timeout=0.5)  # nothing listens
        await am.start()
        try:
            # The coroutine finishes without ever suspending: no I/O, no waiting.
            coroutine = am.on_changes(changes, now)
            began = time.perf_counter()
            with pytest.raises(StopIteration):
                coroutine.send(None)
            elapsed = time.perf_counter() - began
            # Generous: the proof of not blocking is the StopIteration; this catches a
            # pathological slowdown (quadratic work), not scheduling noise.
            assert elapsed < 5, f"on_changes took {elapsed * 1000:.0f} ms"
            assert am.firing == 10_000

            await eventually(lambda: am.failed >= 1, "the sender is failing meanwhile")
            # Again without suspending, while the sender keeps failing.
            with pytest.raises(StopIteration):
                am.on_changes(closed, now).send(None)
            assert (am.firing, am.pending, am.dropped) == (0, 10_000, 0)
        finally:
            await am.stop()

    run(scenario())


def test_resend_keeps_alerts_alive_and_a_dead_worker_lets_them_expire(
    alertmanager: Alertmanager,
) -> None:
    now = int(time.time())
    engine = Engine(RULES)
    changes = one(engine.apply(received("R-ALIVE", now - 95 * MINUTE), now))

    async def scenario() -> None:
        am = notifier(alertmanager.url, resend_interval=0.5)  # endsAt = post + 2 s
        await am.start()
        try:
            await am.on_changes(changes, now)
            await eventually(lambda: bool(alertmanager.active()), "fired")
            await asyncio.sleep(4)  # twice the expiry: alive only because it is re-posted
            assert ("R-ALIVE", ALERT_AT_RISK) in alertmanager.active()
            assert am.requests >= 5
        finally:
            await am.stop()  # a stopping worker does not resolve its pages ...
        assert ("R-ALIVE", ALERT_AT_RISK) in alertmanager.active()
        # ... but without re-posts they expire on their own.
        await eventually(lambda: not alertmanager.active(), "expired", timeout=10)

    run(scenario())


def test_restarted_worker_adopts_and_resolves_its_predecessors_alerts(
    alertmanager: Alertmanager, webhook: Webhook
) -> None:
    now = int(time.time())
    engine = Engine(RULES)
    fire = [
        *one(engine.apply(received("R-KEEP", now - 95 * MINUTE), now - 60)),
        *one(engine.apply(received("R-GONE", now - 100 * MINUTE), now - 60)),
    ]

    async def scenario() -> None:
        before = notifier(alertmanager.url)
        await before.start()
        await before.on_changes(fire, now - 60)
        await eventually(lambda: len(alertmanager.active()) == 2, "two pages")
        await before.stop()
        first = alertmanager.active()

        # A new worker restores the clocks (published outcomes, no changes) and reconciles.
        restored = Engine.restore(engine.snapshot(), RULES)
        after = notifier(alertmanager.url)
        after.reconcile(restored.published(), now)
        assert after.firing == 2
        await after.start()
        try:
            await eventually(lambda: after.posted >= 2, "adopted alerts re-posted")
            again = alertmanager.active()
            for key in first:  # same alerts, same start: Alertmanager sees no new page
                assert again[key]["startsAt"] == first[key]["startsAt"]
                assert again[key]["fingerprint"] == first[key]["fingerprint"]

            # A contact for R-GONE resolves the page its predecessor fired.
            stop = one(restored.apply(contact("R-GONE", now - 5 * MINUTE), now))
            await after.on_changes(stop, now)
            await eventually(
                lambda: set(alertmanager.active()) == {("R-KEEP", ALERT_AT_RISK)}, "resolved"
            )
            await eventually(
                lambda: bool(webhook.received("R-GONE", ALERT_AT_RISK, "resolved")), "webhook"
            )
        finally:
            await after.stop()

        # A worker that holds nothing (restarted, never reconciled) still resolves the page
        # that the change's previous outcome had.
        bare = notifier(alertmanager.url)
        await bare.start()
        try:
            stop = one(restored.apply(contact("R-KEEP", now - 1 * MINUTE), now))
            await bare.on_changes(stop, now)
            await eventually(lambda: not alertmanager.active(), "R-KEEP resolved")
        finally:
            await bare.stop()

    run(scenario())


def test_no_alertmanager_binary_is_a_failure_not_a_skip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", os.devnull)
    with pytest.raises(pytest.fail.Exception, match="Alertmanager is required: apt-get install"):
        alertmanager_binary()


def test_reconcile_adopts_resolves_and_forgets() -> None:
    """After a rebalance: owned clocks decide what fires; clocks owned elsewhere are let go."""
    now = int(time.time())
    engine = Engine(RULES)
    changes = [
        c
        for ref in ("R-A", "R-B", "R-C")
        for c in one(engine.apply(received(ref, now - 95 * MINUTE), now))
    ]
    am = notifier("http://127.0.0.1:9")  # never started: state only
    run(am.on_changes(changes, now))
    assert am.firing == 3

    # R-B stopped without this notifier hearing of it; R-C moved to another worker; R-D is a
    # clock restored at risk from the database.
    engine.apply(contact("R-B", now - 60), now)
    engine.evict("R-C")
    engine.apply(received("R-D", now - 100 * MINUTE), now)
    am.reconcile(engine.published(), now)
    assert am.firing == 2  # R-A kept, R-D adopted
    assert am.queued_resolutions() == [(ALERT_AT_RISK, "R-B")]  # resolved, not forgotten
    assert am.dropped == 0
