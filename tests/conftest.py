"""Shared pytest configuration.

Slow tests (soak, national-scale files) are *deselected* unless `--slow` is given: they are
not skipped at run time, so a test that is collected always runs to a pass or a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("slow") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared beside the repository: required, never optional."""
    if not (SHARED / "golden" / "events.ndjson").is_file():
        pytest.fail(f"{SHARED} with golden/events.ndjson is required beside the repository")
    return SHARED
