"""Helpers of the board's integration tests: event lines, a board process, a real browser.

Chromium is Debian's (`/usr/bin/chromium`), driven by Playwright for Python; axe-core comes
from npm (`scripts/bootstrap`). A missing one is a test failure, never a skip.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from consumers.local.embedded import reap
from tests.support import crisiswatch

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = REPO / "consumers" / "board" / "web" / "node_modules" / "axe-core" / "axe.min.js"


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


_counter = iter(range(1, 1_000_000))


def event(kind: str, ref: str, at: float, **data: Any) -> bytes:
    """One CloudEvents line of `referral.<kind>` for `ref`, happening at epoch `at`."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": f"{ref}-{kind}-{next(_counter)}-{time.monotonic_ns()}",
            "source": "urn:nhs:ods:TEST",
            "type": f"referral.{kind}",
            "time": iso(at),
            "data": {"referral_id": ref, **data},
        }
    ).encode()


def received(
    ref: str, at: float, pathway: str = "ucr_2h", region: str | None = "Y62", icb: str = "QYG"
) -> bytes:
    data: dict[str, Any] = {"pathway": pathway, "provider": "RY7", "icb": icb}
    if region is not None:
        data["region"] = region
    return event("received", ref, at, **data)


def seen(ref: str, at: float) -> bytes:
    """An attended face-to-face contact: stops the clock."""
    return event("contact", ref, at, contact_id=f"c-{ref}", mode="face_to_face", attended=True)


class BoardProcess:
    """`crisiswatch board` as a child process on a free port; `url` without a trailing /."""

    def __init__(self, database_url: str, log: Path, *extra: str) -> None:
        self.log = log
        with log.open("ab") as handle:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [crisiswatch(), "board", "--database-url", database_url, "--port", "0", *extra],
                stdout=subprocess.PIPE,
                stderr=handle,
                env={k: v for k, v in os.environ.items() if not k.startswith("CRISISWATCH_BOARD")},
            )
        self.url = self._address(30.0)

    def _address(self, timeout: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().decode() if ready else ""
        if not line.startswith("board: http://"):
            self.stop()
            pytest.fail(f"the board did not print its address: {line!r} {self.log.read_text()}")
        return line.split(" ", 1)[1].strip().rstrip("/")

    def stop(self) -> None:
        reap(self.process, 10.0)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextmanager
def board_process(database_url: str, log: Path, *extra: str) -> Iterator[BoardProcess]:
    board = BoardProcess(database_url, log, *extra)
    try:
        yield board
    finally:
        board.stop()


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of a GET; HTTP errors are answers too."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def fetch_json(url: str, headers: dict[str, str] | None = None) -> Any:
    status, body = fetch(url, headers)
    assert status == 200, (status, body)
    return json.loads(body)


def first_sse_message(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The first `board` message of an SSE stream, parsed."""
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=15) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        event_name = ""
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event_name = line[7:]
            elif line.startswith("data: ") and event_name == "board":
                return dict(json.loads(line[6:]))
    raise AssertionError("the stream ended without a board message")


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium through Playwright (never `playwright install`)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is required: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not AXE.is_file():
        pytest.fail(f"axe-core is required at {AXE}: run scripts/bootstrap (npm ci)")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document)")
    return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
