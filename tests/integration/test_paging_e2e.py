"""Paging end to end: broker -> worker -> Alertmanager -> on-call webhook, and
worker /metrics -> Prometheus (generated rules) -> Alertmanager, all real processes.

A referral received 95 minutes ago (event time) must page its region's on-call receiver; its
face-to-face contact must resolve the page; a backlog rule must fire from the worker's real
metrics; and no referral identifier may appear in any Prometheus series.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumers.kafka.admin import create_topics
from consumers.local.embedded import EmbeddedBroker, free_port
from consumers.store import migrate
from dashboards.policy import SPEC, BacklogAlert
from streams.names import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC
from tests.integration.test_alert_rules import ALERTMANAGER_DIR, RECEIVERS
from tests.integration.test_worker import Worker, event
from tests.support import (
    Webhook,
    get_json,
    produce,
    ready,
    start_alertmanager,
    start_prometheus,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.integration

REFERRAL = "E2E-PAGE-1"


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: Webhook) -> Iterator[str]:
    """The deployed Alertmanager configuration, webhooks pointed at `webhook`, fast timers."""
    target = tmp_path / "alertmanager"
    shutil.copytree(ALERTMANAGER_DIR, target)
    for receiver in RECEIVERS:
        (target / "secrets" / f"{receiver}.token").write_text(f"token-{receiver}\n")
    config = yaml.safe_load((target / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = f"{webhook.url}/{receiver['name']}"
    for route in [config["route"], *config["route"].get("routes", [])]:
        route.update(group_wait="1s", group_interval="1s")
    url, process = start_alertmanager(target, config)  # secrets/ resolve against `target`
    try:
        yield url
    finally:
        stop_process(process)


def test_a_referral_nearing_its_limit_pages_its_region_and_the_visit_resolves_it(
    new_database: Callable[[], str], alertmanager: str, webhook: Webhook, tmp_path: Path
) -> None:
    url = new_database()
    migrate(url)
    metrics_port = free_port()
    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, {EVENTS_TOPIC: 4, OUTCOMES_TOPIC: 4, DLQ_TOPIC: 1})
        worker = Worker(
            broker.bootstrap, url, tmp_path / "worker.log",
            "--alertmanager-url", alertmanager, "--metrics-port", str(metrics_port),
        )  # fmt: skip
        # The generated rules, except that the at-risk backlog pages from the first at-risk
        # clock (the real threshold is 20 for 10m).
        spec = dataclasses.replace(
            SPEC,
            backlog=(
                BacklogAlert("CrisiswatchAtRiskBacklog", "ucr_2h", "at_risk", 0, "0s", "page"),
            ),
        )
        prometheus, prometheus_process = start_prometheus(
            tmp_path, metrics_port, spec, alertmanager
        )
        try:
            wait_for(lambda: ready(f"http://127.0.0.1:{metrics_port}/ready"), 60, "the worker")
            now = time.time()
            produce(
                broker.bootstrap,
                [event("referral.received", REFERRAL, now - 95 * 60, 1,
                       pathway="ucr_2h", provider="RY7", icb="QYG")],
            )  # fmt: skip

            def pages(alertname: str, status: str = "firing") -> list[dict[str, Any]]:
                return [
                    alert
                    for path, _, body in webhook.notifications()
                    if path == "/oncall-y62" and body["status"] == status
                    for alert in body["alerts"]
                    if alert["labels"]["alertname"] == alertname
                ]

            # 1. The worker pages North West's on-call (QYG is in Y62) about this referral.
            wait_for(lambda: bool(pages("ReferralAtRisk")), 60, "the at-risk page")
            page = pages("ReferralAtRisk")[0]
            assert page["labels"]["referral_id"] == REFERRAL
            assert (page["labels"]["region"], page["labels"]["icb"]) == ("Y62", "QYG")
            assert page["labels"]["severity"] == "page"
            assert int(page["annotations"]["minutes_waiting"]) >= 95
            assert not any(
                path != "/oncall-y62"
                for path, _, body in webhook.notifications()
                if any(a["labels"].get("referral_id") == REFERRAL for a in body["alerts"])
            ), "the page reached another region's receiver"

            # 2. The backlog rule fires from the worker's real metrics, via Prometheus.
            wait_for(lambda: bool(pages("CrisiswatchAtRiskBacklog")), 90, "the backlog page")
            firing = get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
            assert any(
                a["labels"]["alertname"] == "CrisiswatchAtRiskBacklog"
                and a["labels"]["region"] == "Y62"
                and a["state"] == "firing"
                for a in firing
            )

            # 3. The visit (made 2 minutes ago) resolves the referral's page.
            produce(
                broker.bootstrap,
                [event("referral.contact", REFERRAL, now - 120, 2,
                       contact_id="c1", mode="face_to_face", attended=True)],
            )  # fmt: skip
            wait_for(
                lambda: any(
                    a["labels"]["referral_id"] == REFERRAL
                    for a in pages("ReferralAtRisk", "resolved")
                ),
                60,
                "the page to resolve",
            )
            active = get_json(f"{alertmanager}/api/v2/alerts?active=true")
            assert not [a for a in active if a["labels"].get("referral_id") == REFERRAL]

            # 4. No referral identifier in any Prometheus series.
            names = get_json(f"{prometheus}/api/v1/labels")["data"]
            assert "referral_id" not in names
            for name in names:
                quoted = urllib.parse.quote(name)
                values = get_json(f"{prometheus}/api/v1/label/{quoted}/values")["data"]
                assert not any(REFERRAL in str(v) for v in values), name
        finally:
            stop_process(prometheus_process)
            worker.stop()
