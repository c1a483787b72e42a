"""Worker operations: JSON logs, fail-fast startup with contract exit codes, SIGTERM drain."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumers.kafka.admin import create_topics
from consumers.local.embedded import EmbeddedBroker, free_port
from consumers.observe.logs import JsonFormatter, configure_logging
from consumers.store import migrate
from streams.names import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC
from tests.integration.test_worker import (
    PARTITIONS,
    as_row,
    audit_ids,
    clock_rows,
    golden,
    latest_outcomes,
    read_topic,
)
from tests.support import crisiswatch, produce, wait_for

# -- logs ----------------------------------------------------------------------------------------


def _capture(level: str, fmt: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    configure_logging(level, fmt, stream)
    return logging.getLogger("crisiswatch.test"), stream


@pytest.fixture
def restore_root_logger() -> Any:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_json_logs_are_one_object_a_line_with_extra_fields() -> None:
    log, stream = _capture("INFO", "json")
    log.info("assigned %d partitions", 3, extra={"partitions": [0, 1, 2]})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert list(first)[:4] == ["time", "level", "logger", "message"]
    assert first["level"] == "INFO"
    assert first["logger"] == "crisiswatch.test"
    assert first["message"] == "assigned 3 partitions"
    assert first["partitions"] == [0, 1, 2]
    assert first["time"].endswith("Z")
    assert second["level"] == "ERROR"
    assert "RuntimeError: boom" in second["exception"]


@pytest.mark.usefixtures("restore_root_logger")
@pytest.mark.parametrize(
    ("level", "kept"),
    [
        ("DEBUG", True),  # debug may carry referral ids
        ("INFO", False),  # anything above drops them
        ("WARNING", False),
    ],
)
def test_referral_ids_are_logged_at_debug_only(level: str, kept: bool) -> None:
    log, stream = _capture("DEBUG", "json")
    log.log(logging.getLevelName(level), "clock changed", extra={"referral_id": "R-123"})
    entry = json.loads(stream.getvalue())
    assert ("referral_id" in entry) is kept
    assert ("R-123" in stream.getvalue()) is kept


@pytest.mark.usefixtures("restore_root_logger")
def test_text_format_and_bad_settings() -> None:
    log, stream = _capture("INFO", "text")
    log.info("hello")
    assert stream.getvalue().rstrip().endswith("INFO crisiswatch.test: hello")
    with pytest.raises(ValueError, match="log level"):
        configure_logging("LOUD", "json")
    with pytest.raises(ValueError, match="log format"):
        configure_logging("INFO", "xml")


def test_json_formatter_never_fails_on_odd_extras() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.odd = object()  # not JSON: rendered with str()
    assert json.loads(JsonFormatter().format(record))["message"] == "m"


# -- fail fast -----------------------------------------------------------------------------------


def _run_worker(*args: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [crisiswatch(), "worker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "CRISISWATCH_METRICS_PORT": "0"},
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `crisiswatch:` line; everything else on stderr must be JSON log lines."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("crisiswatch:")]
    others = [line for line in result.stderr.splitlines() if not line.startswith("crisiswatch:")]
    assert len(errors) == 1, result.stderr
    for line in others:
        json.loads(line)
    return errors[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # a bootstrap address without a port
        (["--kafka", "broker.example"], "is not HOST:PORT"),
        # a port that is not a number
        (["--kafka", "broker:90x2"], "is not HOST:PORT"),
        # an unparsable libpq URL: the message must not repeat it (it may hold a password)
        (["--database-url", "postgresql://u:secret@h/d?sslmode"], "cannot be parsed"),
        # not http(s)
        (["--alertmanager-url", "ftp://alerts"], "http(s)"),
        # no host
        (["--alertmanager-url", "http://"], "http(s)"),
        # a bad port
        (["--alertmanager-url", "http://am:99999"], "not a URL"),
        # log settings
        (["--log-level", "LOUD"], "log level"),
        (["--log-format", "xml"], "log-format"),
    ],
)
def test_malformed_settings_fail_with_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = _run_worker(*args)
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result)
    assert message in line
    assert "secret" not in result.stderr


@pytest.mark.integration
def test_an_unreachable_broker_fails_within_the_check_timeout_with_exit_1() -> None:
    port = free_port()  # nothing listens there
    result = _run_worker("--kafka", f"127.0.0.1:{port}", timeout=60)
    assert result.returncode == 1, result.stderr
    assert "cannot reach Kafka" in _one_error_line(result)


@pytest.mark.integration
def test_an_unreachable_database_or_missing_topic_fails_with_exit_1(broker: EmbeddedBroker) -> None:
    result = _run_worker("--kafka", broker.bootstrap, "--group", "no-topic")
    assert result.returncode == 1, result.stderr
    assert "no topic 'referral-events'" in _one_error_line(result)

    create_topics(broker.bootstrap, {EVENTS_TOPIC: 1, OUTCOMES_TOPIC: 1, DLQ_TOPIC: 1})
    url = f"postgresql://crisiswatch:secret@127.0.0.1:{free_port()}/crisiswatch"
    result = _run_worker("--kafka", broker.bootstrap, "--database-url", url)
    assert result.returncode == 1, result.stderr
    line = _one_error_line(result)
    assert "cannot connect to PostgreSQL" in line
    assert "secret" not in result.stderr


def _unmigrated(url: str) -> None:
    pass


def _older(url: str) -> None:
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE partition_leases")
        conn.execute("DELETE FROM schema_migrations WHERE version = 3")


def _newer(url: str) -> None:
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name, oldest_worker)"
            " VALUES (9999, '9999_from_the_future', 9999)"
        )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (_unmigrated, "no crisiswatch schema: run 'crisiswatch db migrate'"),
        (_older, "older than this worker (not applied: 0003_partition_leases)"),
        (_newer, "newer than this worker"),
    ],
)
def test_a_schema_the_worker_cannot_run_on_fails_with_one_line_and_exit_1(
    broker: EmbeddedBroker,
    new_database: Callable[[], str],
    prepare: Callable[[str], None],
    message: str,
) -> None:
    create_topics(broker.bootstrap, {EVENTS_TOPIC: 1, OUTCOMES_TOPIC: 1, DLQ_TOPIC: 1})
    url = new_database()
    prepare(url)
    result = _run_worker("--kafka", broker.bootstrap, "--database-url", url)
    assert result.returncode == 1, result.stderr
    assert message in _one_error_line(result)
    assert "faust" not in result.stderr.lower()


# -- SIGTERM -------------------------------------------------------------------------------------


@pytest.mark.integration
def test_sigterm_drains_writes_leaves_and_a_restart_loses_nothing(
    new_database: Callable[[], str], tmp_path: Path, shared: Path
) -> None:
    lines, expected = golden(shared)
    url = new_database()
    migrate(url)
    with EmbeddedBroker() as broker:
        kafka = broker.bootstrap
        create_topics(kafka, {EVENTS_TOPIC: PARTITIONS, OUTCOMES_TOPIC: PARTITIONS, DLQ_TOPIC: 1})
        env = {
            **os.environ,
            "CRISISWATCH_PSEUDONYM_KEY": "test-key-0123456789abcdef",
            "CRISISWATCH_METRICS_PORT": "0",
        }
        command = [crisiswatch(), "worker", "--kafka", kafka, "--database-url", url]
        first_log = tmp_path / "first.log"
        with first_log.open("wb") as handle:
            first = subprocess.Popen(
                [*command, "--batch-size", "40"], stdout=handle, stderr=subprocess.STDOUT, env=env
            )
        try:
            produce(kafka, lines)
            wait_for(lambda: len(audit_ids(url)) > 300, 60, "the worker to be mid-stream")
            first.send_signal(signal.SIGTERM)
            assert first.wait(30) == 0, first_log.read_text()
        finally:
            if first.poll() is None:
                first.kill()
        text = first_log.read_text()
        entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        messages = [e["message"] for e in entries]
        assert any(m.startswith("drained") for m in messages), text
        assert any("leaving the consumer group" in m for m in messages), text
        assert any("LeaveGroup request succeeded" in m for m in messages), text
        assert "Traceback" not in text
        # Referral ids appear in no log line at INFO and above.
        referral_ids = {row[0] for row in expected}
        assert not [m for m in messages if any(r in m for r in referral_ids)]

        stored = len(audit_ids(url))
        assert stored < 2091, "the worker finished before SIGTERM arrived"
        # The stored positions agree with the audit rows: the last batch was written whole.
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(next_offset), 0) FROM consumer_positions"
            ).fetchone()
        assert row is not None
        assert 0 < row[0] <= len(lines)

        second_log = tmp_path / "second.log"
        with second_log.open("wb") as handle:
            second = subprocess.Popen(
                [*command, "--batch-size", "40"], stdout=handle, stderr=subprocess.STDOUT, env=env
            )
        try:
            wait_for(lambda: clock_rows(url) == expected, 120, "clocks equal to the golden run")
            assert len(audit_ids(url)) == 2091
            outcomes = latest_outcomes(read_topic(kafka, OUTCOMES_TOPIC))
            assert [as_row(outcomes[k]) for k in sorted(outcomes)] == expected
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, second_log.read_text()
        finally:
            if second.poll() is None:
                second.kill()
