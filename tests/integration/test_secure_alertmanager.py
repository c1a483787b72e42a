"""Per-referral pages to an Alertmanager served over https with basic auth (CONTRACT section 7).

A real Alertmanager with `--web.config.file`: its TLS certificate from the test CA (for
127.0.0.1) and one basic-auth user whose password is stored as a bcrypt hash. The notifier
trusts only that CA (`CRISISWATCH_ALERTMANAGER_CAFILE`) and reads its password from a file:
a page gets through; a wrong password is reported (naming the user, never the password) and
retried, nothing dropped; a CA that did not sign the certificate is reported too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from consumers.local.embedded import free_port
from consumers.observe.alertmanager import ALERT_AT_RISK, AlertmanagerAccess, AlertmanagerNotifier
from streams.engine import Engine, Rules
from tests.factory import received
from tests.integration.test_alertmanager import alertmanager_binary
from tests.secure import ALERTMANAGER_PASSWORD, Pki, Witness
from tests.support import crisiswatch, stop_process

pytestmark = pytest.mark.integration

USER = "crisiswatch"
RULES = Rules()


class SecureAlertmanager:
    """Alertmanager on https://127.0.0.1:PORT with basic auth (module docstring)."""

    def __init__(self, directory: Path, pki: Pki) -> None:
        self.pki = pki
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        config = directory / "alertmanager.yml"
        config.write_text(
            yaml.safe_dump({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]})
        )
        hashed = bcrypt.hashpw(ALERTMANAGER_PASSWORD.encode(), bcrypt.gensalt(rounds=6)).decode()
        web = directory / "web.yml"
        web.write_text(
            yaml.safe_dump(
                {
                    "tls_server_config": {
                        "cert_file": str(pki.server.cert),
                        "key_file": str(pki.server.key),
                    },
                    "basic_auth_users": {USER: hashed},
                }
            )
        )
        self.log = directory / "alertmanager.log"
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(
                [
                    alertmanager_binary(),
                    f"--config.file={config}",
                    f"--web.config.file={web}",
                    f"--storage.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                ],
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._context = ssl.create_default_context(cafile=str(pki.ca))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"alertmanager exited:\n{self.log.read_text()[-3000:]}")
            try:
                self.get("/-/ready")
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
                continue
            return
        stop_process(self.process)
        pytest.fail(f"alertmanager not ready:\n{self.log.read_text()[-3000:]}")

    def get(self, path: str, password: str = ALERTMANAGER_PASSWORD) -> Any:
        request = urllib.request.Request(self.url + path)
        token = base64.b64encode(f"{USER}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=5, context=self._context) as response:
            body = response.read()
        return json.loads(body) if path.startswith("/api") else body

    def referrals(self) -> set[tuple[str, str]]:
        return {
            (a["labels"].get("referral_id", ""), a["labels"]["alertname"])
            for a in self.get("/api/v2/alerts")
        }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def alertmanager(tmp_path: Path, pki: Pki) -> Iterator[SecureAlertmanager]:
    am = SecureAlertmanager(tmp_path, pki)
    yield am
    stop_process(am.process)


@pytest.fixture
def witness(pki: Pki) -> Iterator[Witness]:
    seen = Witness()
    yield seen
    seen.check([ALERTMANAGER_PASSWORD, *pki.private_keys()])


def password_file(directory: Path, password: str) -> Path:
    path = directory / "am-password"
    path.write_text(password + "\n")
    return path


def at_risk_change(referral: str) -> tuple[list[Any], int]:
    now = int(time.time())
    change = Engine(RULES).apply(received(referral, now - 95 * 60), now)
    assert change is not None
    assert change.outcome.state == "at_risk"
    return [change], now


async def page(am_url: str, access: AlertmanagerAccess, password: Path, referral: str) -> Any:
    """Post one at-risk page with `access`; the notifier after 3 s or its first success."""
    settings, secret = AlertmanagerAccess.load(access.cafile, access.username, password)
    notifier = AlertmanagerNotifier(
        am_url,
        rules=RULES,
        ssl_context=settings.ssl_context(),
        username=settings.username,
        password=secret,
    )
    await notifier.start()
    try:
        changes, now = at_risk_change(referral)
        await notifier.on_changes(changes, now)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not notifier.posted:
            await asyncio.sleep(0.05)
    finally:
        await notifier.stop()
    return notifier


def test_a_page_gets_through_https_and_basic_auth(
    alertmanager: SecureAlertmanager,
    pki: Pki,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    witness: Witness,
) -> None:
    caplog.set_level(logging.DEBUG)
    access = AlertmanagerAccess(cafile=pki.ca, username=USER)
    secret = password_file(tmp_path, ALERTMANAGER_PASSWORD)
    notifier = asyncio.run(page(alertmanager.url, access, secret, "R-TLS-1"))
    assert notifier.posted == 1
    assert notifier.failed == 0
    assert ("R-TLS-1", ALERT_AT_RISK) in alertmanager.referrals()
    witness.add("log", caplog.text)
    witness.add("alertmanager log", alertmanager.log.read_text())


def test_wrong_credentials_are_reported_and_retried(
    alertmanager: SecureAlertmanager,
    pki: Pki,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    witness: Witness,
) -> None:
    caplog.set_level(logging.DEBUG)
    access = AlertmanagerAccess(cafile=pki.ca, username=USER)
    wrong = password_file(tmp_path, "not-" + ALERTMANAGER_PASSWORD)
    notifier = asyncio.run(page(alertmanager.url, access, wrong, "R-TLS-2"))
    assert notifier.posted == 0
    assert notifier.failed >= 1
    assert notifier.rejected == 0  # kept for the retry, not dropped as a bad batch
    refused = [r.getMessage() for r in caplog.records if "credentials refused" in r.getMessage()]
    assert refused, caplog.text
    assert f"user {USER!r}" in refused[0]
    assert "HTTP 401" in refused[0]
    assert ("R-TLS-2", ALERT_AT_RISK) not in alertmanager.referrals()
    witness.add("log", caplog.text)
    witness.add("alertmanager log", alertmanager.log.read_text())
    # The wrong password is a secret too.
    witness.check(["not-" + ALERTMANAGER_PASSWORD])


def test_a_certificate_from_another_ca_is_reported(
    alertmanager: SecureAlertmanager,
    pki: Pki,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    witness: Witness,
) -> None:
    caplog.set_level(logging.DEBUG)
    access = AlertmanagerAccess(cafile=pki.other_ca, username=USER)
    secret = password_file(tmp_path, ALERTMANAGER_PASSWORD)
    notifier = asyncio.run(page(alertmanager.url, access, secret, "R-TLS-3"))
    assert notifier.posted == 0
    assert notifier.failed >= 1
    assert "certificate verify failed" in caplog.text
    witness.add("log", caplog.text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--alertmanager-url", f"https://{USER}:{ALERTMANAGER_PASSWORD}@127.0.0.1:9093"],
            "credentials in the URL are refused",
        ),
        (
            ["--alertmanager-url", f"https://{USER}:{ALERTMANAGER_PASSWORD}@127.0.0.1:99999"],
            "credentials in the URL are refused",
        ),
        (["--alertmanager-username", USER], "go together"),
    ],
    ids=["password-in-url", "password-in-url-with-a-bad-port", "user-without-password-file"],
)
def test_bad_alertmanager_settings_exit_2_without_the_password(
    args: list[str], message: str, witness: Witness
) -> None:
    result = subprocess.run(
        [crisiswatch(), "worker", "--alertmanager-url", "https://127.0.0.1:9093", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    witness.add("worker stderr", result.stderr)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
