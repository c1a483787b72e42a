"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from consumers.local.embedded import reap
from streams.names import EVENTS_TOPIC


def crisiswatch() -> str:
    """The installed `crisiswatch` entry point (beside this interpreter, else on PATH)."""
    beside = Path(sys.executable).parent / "crisiswatch"
    found = str(beside) if beside.is_file() else shutil.which("crisiswatch")
    if found is None:
        pytest.fail("the crisiswatch entry point is not installed (pip install -e .)")
    return found


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` every 250 ms; fail with `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def produce(kafka: str, lines: list[bytes]) -> None:
    """Send event lines to `referral-events`, keyed by referral id as publishers do."""
    producer = KafkaProducer(bootstrap_servers=kafka, acks=1, enable_idempotence=False, linger_ms=5)
    for line in lines:
        try:
            key = json.loads(line)["data"]["referral_id"].encode()
        except (ValueError, KeyError, TypeError):
            key = None
        producer.send(EVENTS_TOPIC, key=key, value=line)
    producer.flush()
    producer.close()


class Webhook:
    """An HTTP receiver of Alertmanager webhook notifications, in a thread.

    Records (path, Authorization header, JSON body) of every POST; `url` has no path, so a
    test can point each receiver at its own path.
    """

    def __init__(self) -> None:
        self._received: list[tuple[str, str, Any]] = []
        lock = self._lock = threading.Lock()
        received = self._received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                with lock:
                    received.append((self.path, self.headers.get("Authorization", ""), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def notifications(self) -> list[tuple[str, str, Any]]:
        with self._lock:
            return list(self._received)

    def alerts(self) -> list[Any]:
        """Every alert of every notification so far, in arrival order."""
        return [alert for _, _, body in self.notifications() for alert in body["alerts"]]

    def received(self, referral_id: str, alertname: str, status: str) -> list[Any]:
        return [
            a
            for a in self.alerts()
            if a["labels"].get("referral_id") == referral_id
            and a["labels"].get("alertname") == alertname
            and a["status"] == status
        ]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def binary(*names: str, package: str) -> str:
    """The path of the first of `names` on PATH; a failure (never a skip) if none is."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.fail(f"{names[0]} is required: apt-get install {package}")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def ready(url: str) -> bool:
    """True if `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start_process(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:  # the child keeps its own descriptor
        return subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    reap(process, 10.0)


def start_prometheus(
    tmp_path: Path, metrics_port: int, spec: Any, alertmanager: str | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """A real Prometheus scraping a worker's /metrics every second, with the rules generated
    from `spec` (a dashboards.policy.RuleSpec), alerting to `alertmanager` if given."""
    import yaml

    from dashboards import alert_rules, policy

    rules = tmp_path / "rules.yml"
    alert_rules.write(rules, spec)
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": policy.WORKER_JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
            }
        ],
    }
    if alertmanager is not None:
        target = alertmanager.removeprefix("http://")
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    return _start_ready(
        "Prometheus",
        [
            binary("prometheus", package="prometheus"),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        ],
        tmp_path / "prometheus.log",
    )


def start_alertmanager(
    directory: Path, config: dict[str, Any]
) -> tuple[str, subprocess.Popen[bytes]]:
    """A real Alertmanager (Debian's `prometheus-alertmanager`) with `config`, no clustering,
    on a free loopback port, its storage and log in `directory`; ready when this returns."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    return _start_ready(
        "Alertmanager",
        [
            binary("alertmanager", "prometheus-alertmanager", package="prometheus-alertmanager"),
            f"--config.file={config_file}",
            f"--storage.path={directory / 'data'}",
            "--cluster.listen-address=",
        ],
        directory / "alertmanager.log",
    )


def _start_ready(name: str, args: list[str], log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """Start a Prometheus-family server (`args` plus a free loopback `--web.listen-address`)
    and wait for its `/-/ready`; stopped again if it never gets there."""
    from consumers.local.embedded import free_port

    port = free_port()
    process = start_process([*args, f"--web.listen-address=127.0.0.1:{port}"], log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(f"{url}/-/ready"), 30, f"{name} to be ready")
    except BaseException:
        stop_process(process)
        raise
    return url, process
