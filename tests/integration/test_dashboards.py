"""The generated Grafana dashboards: golden files, structure, every query against the real
services, and `dashboards push` against a fake Grafana that checks the documented HTTP API.

Live queries: a worker (subprocess) consumes a few thousand simulated events published to an
embedded Kafka-protocol broker over ~10 s (event times in the last 4 hours, so clocks are open,
at risk and breached now), writes a fresh migrated PostgreSQL and serves /metrics; Prometheus
scrapes it every second with the generated rules (long windows evaluated every second too).
Every PromQL expression must evaluate without error after Grafana's variables are substituted,
and return data unless listed in `MAY_BE_EMPTY`; every SQL query must run as the read-only role
`crisiswatch_reader` and return its declared columns. No real Grafana is run here.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from consumers.cli.main import main as crisiswatch_main
from consumers.kafka.admin import create_topics
from consumers.local.embedded import EmbeddedBroker, free_port
from consumers.store import migrate
from dashboards import build as builder
from dashboards import grafana, policy
from dashboards.model import POSTGRES, PROMETHEUS, SqlQuery
from dashboards.policy import SPEC
from streams.errors import ConfigurationError, ServiceUnavailableError
from streams.names import DLQ_TOPIC, EVENTS_TOPIC, OUTCOMES_TOPIC
from streams.simulation import SimulationConfig, simulate
from tests.conftest import REPO
from tests.integration.test_worker import Worker
from tests.support import get_json, produce, ready, start_prometheus, stop_process, wait_for

DASHBOARD_DIR = REPO / "deploy" / "grafana" / "dashboards"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
BUILT = [d.to_dict() for d in builder.dashboards()]

# Grafana's own variables (and macros) that dashboards may use without defining.
BUILTIN_VARIABLES = {"__rate_interval", "__range", "__interval", "__timeFilter"}

# (dashboard uid, panel title) of PromQL that may rightly return nothing in a 1-minute test.
MAY_BE_EMPTY = {
    # Only rule alerts firing; none need fire with a few minutes of normal data.
    ("crisiswatch-pipeline", "Alerts firing"),
    # Needs a 2-day clock both started and stopped within seconds of the test's scrapes:
    # reablement visits are mostly the next day, so few or none stop in the test window.
    ("crisiswatch-compliance", "2-day reablement % met in the time range"),
}


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [(d["uid"], p) for d in BUILT for p in d["panels"]]


def _targets(kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (uid, panel["title"], target)
        for uid, panel in _panels()
        for target in panel["targets"]
        if target["datasource"]["type"] == kind
    ]


PROM_TARGETS = _targets(PROMETHEUS["type"])
SQL_TARGETS = _targets(POSTGRES["type"])


def _id(item: tuple[str, str, dict[str, Any]]) -> str:
    return f"{item[0]}:{item[1]}:{item[2]['refId']}"


# -- golden files and structure ------------------------------------------------------------------


def test_rebuilding_gives_the_committed_files_exactly() -> None:
    expected = builder.files()
    committed = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARD_DIR.glob("*.json")}
    assert sorted(committed) == sorted(expected), "run: python -m dashboards build"
    for name, text in expected.items():
        assert committed[name] == text, f"{name} is stale: run python -m dashboards build"


def test_rendering_is_deterministic_and_json_with_sorted_keys() -> None:
    assert builder.files() == builder.files()
    for text in builder.files().values():
        data = json.loads(text)
        assert builder.render(data) == text  # sorted keys, fixed indent: a fixed point
        assert data["schemaVersion"] >= 39
        assert data["id"] is None


def test_build_command_writes_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        crisiswatch_main(["dashboards", "build", "--out", str(tmp_path)])
    assert exit_info.value.code == 0
    assert {p.name for p in tmp_path.iterdir()} == set(builder.files())
    with pytest.raises(SystemExit) as exit_info:
        crisiswatch_main(["dashboards", "build", "--out", str(tmp_path), "--check"])
    assert exit_info.value.code == 0
    (tmp_path / "crisiswatch.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        crisiswatch_main(["dashboards", "build", "--out", str(tmp_path), "--check"])
    assert exit_info.value.code == 1
    assert "out of date" in capsys.readouterr().err


def test_uids_titles_and_panel_ids_are_unique() -> None:
    uids = [d["uid"] for d in BUILT]
    assert len(set(uids)) == len(uids) == 3
    assert "crisiswatch" in uids  # the alerts' dashboard_url ends in /d/crisiswatch
    assert len({d["title"] for d in BUILT}) == 3
    for dashboard in BUILT:
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(set(ids)) == len(ids), dashboard["uid"]
        assert all(len(uid) <= 40 for uid in uids)


def test_every_panel_has_a_provisioned_datasource_and_targets() -> None:
    known = {PROMETHEUS["uid"]: PROMETHEUS["type"], POSTGRES["uid"]: POSTGRES["type"]}
    for uid, panel in _panels():
        where = f"{uid}: {panel['title']}"
        assert panel["datasource"]["uid"] in known, where
        assert known[panel["datasource"]["uid"]] == panel["datasource"]["type"], where
        assert panel["targets"], where
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), where
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], where
            assert (target.get("expr") or target.get("rawSql") or "").strip(), where
        x, w = panel["gridPos"]["x"], panel["gridPos"]["w"]
        assert x >= 0, where
        assert x + w <= 24, where


def test_every_variable_used_is_defined() -> None:
    for dashboard in BUILT:
        defined = {v["name"] for v in dashboard["templating"]["list"]}
        texts = [
            t.get("expr") or t.get("rawSql") for p in dashboard["panels"] for t in p["targets"]
        ]
        texts += [v["definition"] for v in dashboard["templating"]["list"]]
        for text in texts:
            for name in re.findall(r"\$\{?(\w+)", text):
                assert name in defined | BUILTIN_VARIABLES, f"{dashboard['uid']}: ${name}"


def test_provisioning_matches_the_dashboards() -> None:
    sources = yaml.safe_load((PROVISIONING / "datasources" / "crisiswatch.yaml").read_text())
    by_uid = {s["uid"]: s for s in sources["datasources"]}
    assert by_uid[PROMETHEUS["uid"]]["type"] == PROMETHEUS["type"]
    assert by_uid[PROMETHEUS["uid"]]["url"] == "${PROMETHEUS_URL}"
    postgres = by_uid[POSTGRES["uid"]]
    assert postgres["type"] == POSTGRES["type"]
    assert postgres["secureJsonData"]["password"].startswith("$__file{")  # never in the repo
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "crisiswatch.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]


# -- live queries: Prometheus and PostgreSQL -------------------------------------------------


@dataclasses.dataclass
class Live:
    prometheus: str
    database_url: str
    region: str  # a region with open clocks


def query(prometheus: str, expr: str) -> dict[str, Any]:
    """/api/v1/query; the whole response, errors included (HTTP 400/422 carry JSON)."""
    data = urllib.parse.urlencode({"query": expr}).encode()
    try:
        with urllib.request.urlopen(f"{prometheus}/api/v1/query", data, timeout=10) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        return dict(json.loads(exc.read()))


def _series(prometheus: str, expr: str) -> list[Any]:
    answer = query(prometheus, expr)
    return list(answer["data"]["result"]) if answer.get("status") == "success" else []


@pytest.fixture(scope="module")
def live(
    new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("dashboards")
    url = new_database()
    migrate(url)
    metrics_port = free_port()
    now = datetime.now(UTC)
    # The last four hours of England at a multiple of its rate, enough events for every
    # panel whatever the hour: the night's rate is a fraction of the day's, so the multiple
    # doubles until there are.
    speed = 5.0
    while True:
        config = SimulationConfig(
            start=now - timedelta(hours=4), duration=timedelta(hours=4), speed=speed, seed=7
        )
        lines = [item.line.encode() for item in simulate(config) if item.arrival <= now]
        if len(lines) > 2000 or speed > 100:
            break
        speed *= 2
    assert len(lines) > 2000
    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, {EVENTS_TOPIC: 4, OUTCOMES_TOPIC: 4, DLQ_TOPIC: 1})
        worker = Worker(
            broker.bootstrap, url, tmp / "worker.log", "--metrics-port", str(metrics_port)
        )
        # The long-window rule group is evaluated every second too (5 minutes in production).
        prometheus, process = start_prometheus(
            tmp, metrics_port, dataclasses.replace(SPEC, long_interval="1s")
        )
        try:
            wait_for(lambda: ready(f"http://127.0.0.1:{metrics_port}/ready"), 60, "the worker")
            wait_for(
                lambda: bool(_series(prometheus, f'up{{job="{policy.WORKER_JOB}"}} == 1')),
                30,
                "Prometheus to scrape the worker",
            )
            # Spread over ~10 s of scrapes, so counters *increase* under Prometheus' eyes
            # (rate() ignores a series' first sample) and the histograms fill.
            chunks = 8
            for i in range(chunks):
                produce(broker.bootstrap, lines[i::chunks])
                time.sleep(1.5)
            wait_for(
                lambda: bool(_series(prometheus, "icb:crisiswatch_clocks_met:ratio_rate7d")),
                60,
                "the 7-day recording rule",
            )
            regions = _series(
                prometheus,
                'topk(1, sum by (region) (crisiswatch_open_clocks{region!="unknown"}))',
            )
            assert regions, "no open clocks by region"
            yield Live(prometheus, url, regions[0]["metric"]["region"])
        finally:
            stop_process(process)
            worker.stop()


def substitute_promql(expr: str, region: str, icb: str = ".*") -> str:
    """Grafana's variables as a dashboard would send them (All: `.*`)."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$__interval", "15s")
        .replace("$region", region)
        .replace("$icb", icb)
    )


def substitute_sql(text: str, region: str, icb: str = ".*") -> str:
    """Grafana's PostgreSQL macros and regex-formatted variables, with a 30-day range."""
    text = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        r"\1 BETWEEN now() - interval '30 days' AND now()",
        text,
    )
    return text.replace("${region:regex}", region).replace("${icb:regex}", icb)


@pytest.mark.integration
@pytest.mark.parametrize("item", PROM_TARGETS, ids=_id)
def test_every_promql_expression_evaluates_and_has_data(
    live: Live, item: tuple[str, str, dict[str, Any]]
) -> None:
    uid, title, target = item
    for region in (".*", live.region):
        expr = substitute_promql(target["expr"], region)
        answer = query(live.prometheus, expr)
        assert answer["status"] == "success", f"{expr}\n{answer.get('error')}"
        assert not answer.get("warnings"), answer.get("warnings")
    if (uid, title) in MAY_BE_EMPTY:
        return
    expr = substitute_promql(target["expr"], ".*")
    # Sub-minute windows may need a scrape or two more: poll briefly before failing.
    wait_for(lambda: bool(_series(live.prometheus, expr)), 20, f"data from {expr}")


@pytest.mark.integration
def test_every_variable_query_has_values(live: Live) -> None:
    for dashboard in BUILT:
        for variable in dashboard["templating"]["list"]:
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
            assert match, variable["definition"]
            selector = substitute_promql(match[1], ".*")
            params = urllib.parse.urlencode({"match[]": selector})
            values = get_json(f"{live.prometheus}/api/v1/label/{match[2]}/values?{params}")
            assert values["status"] == "success"
            assert values["data"], variable["definition"]
            assert live.region in values["data"] or match[2] != "region"


# Queries that must return rows from the simulated data (the others: columns only).
SQL_WITH_ROWS = {
    ("crisiswatch", "At-risk and breached referrals"),
    ("crisiswatch-compliance", "2-hour % met by provider and week"),
    ("crisiswatch-compliance", "2-hour % met by provider and month"),
}


@pytest.mark.integration
@pytest.mark.parametrize("item", SQL_TARGETS, ids=_id)
def test_every_sql_query_runs_as_the_read_only_role(
    live: Live, item: tuple[str, str, dict[str, Any]]
) -> None:
    uid, title, target = item
    from dashboards import compliance, operations

    declared = {
        (d.uid, p.title, chr(ord("A") + i)): q
        for d in (operations.dashboard(), compliance.dashboard())
        for p in d.panels
        for i, q in enumerate(p.queries)
    }[(uid, title, target["refId"])]
    assert isinstance(declared, SqlQuery)
    with psycopg.connect(live.database_url, autocommit=True) as conn:
        conn.execute("SET ROLE crisiswatch_reader")
        assert conn.execute("SELECT current_user").fetchone() == ("crisiswatch_reader",)
        for region in (".*", re.escape(live.region)):
            cursor = conn.execute(sql.SQL(substitute_sql(target["rawSql"], region)))
            assert cursor.description is not None
            assert tuple(c.name for c in cursor.description) == declared.columns
            rows = cursor.fetchall()
            if (uid, title) in SQL_WITH_ROWS and region == ".*":
                assert rows, f"{uid}: {title} returned no rows"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM clocks")


# -- push: a fake Grafana that checks the documented HTTP API ----------------------------------


class FakeGrafana:
    """Grafana's folder and dashboard API (HTTP API reference: "Folder API", "Dashboard API")
    as far as `dashboards push` uses it; records requests and any violation of the API."""

    def __init__(self, token: str = "good-token", forbidden: bool = False) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.violations: list[str] = []
        self.folders: dict[str, str] = {}  # uid -> title
        self.dashboards: dict[str, dict[str, Any]] = {}  # uid -> stored dashboard
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: Any) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                fake.requests.append((method, self.path, body))
                if self.headers.get("Authorization") != f"Bearer {token}":
                    self._reply(401, {"message": "Unauthorized"})
                    return
                if forbidden:
                    self._reply(403, {"message": "Access denied"})
                    return
                json_type = self.headers.get("Content-Type", "").startswith("application/json")
                if method == "POST" and body is not None and not json_type:
                    fake.violations.append(f"{self.path}: not application/json")
                path = self.path.split("?")[0]
                if (method, path) == ("GET", "/api/folders"):
                    self._reply(200, [{"id": i, "uid": u, "title": t}
                                      for i, (u, t) in enumerate(fake.folders.items(), 1)])  # fmt: skip
                elif (method, path) == ("POST", "/api/folders"):
                    fake.create_folder(self, body)
                elif (method, path) == ("POST", "/api/dashboards/db"):
                    fake.save_dashboard(self, body)
                else:
                    fake.violations.append(f"unexpected {method} {self.path}")
                    self._reply(404, {"message": "Not found"})

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PUT(self) -> None:
                self._handle("PUT")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def create_folder(self, handler: Any, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("title"), str):
            self.violations.append(f"POST /api/folders body {body!r}: needs a title")
            handler._reply(400, {"message": "bad request"})
            return
        if set(body) - {"uid", "title", "parentUid"}:
            self.violations.append(f"POST /api/folders: unknown fields {sorted(body)}")
        uid = body.get("uid") or f"auto{len(self.folders)}"
        if uid in self.folders or body["title"] in self.folders.values():
            handler._reply(409, {"message": "a folder with the same name already exists"})
            return
        self.folders[uid] = body["title"]
        handler._reply(200, {"id": len(self.folders), "uid": uid, "title": body["title"]})

    def save_dashboard(self, handler: Any, body: Any) -> None:
        problems = []
        if not isinstance(body, dict) or not isinstance(body.get("dashboard"), dict):
            problems.append("needs a dashboard object")
        else:
            if set(body) - {"dashboard", "folderUid", "folderId", "overwrite", "message"}:
                problems.append(f"unknown fields {sorted(body)}")
            dashboard = body["dashboard"]
            if not dashboard.get("uid") or not dashboard.get("title"):
                problems.append("dashboard needs uid and title")
            if dashboard.get("id") is not None:
                problems.append("id must be null to create or overwrite by uid")
            if body.get("folderUid") not in self.folders:
                problems.append(f"folderUid {body.get('folderUid')!r} does not exist")
            if body.get("overwrite") is not True:
                problems.append("overwrite must be true")
        if problems:
            self.violations.extend(f"POST /api/dashboards/db: {p}" for p in problems)
            handler._reply(400, {"message": "; ".join(problems)})
            return
        uid = body["dashboard"]["uid"]
        self.dashboards[uid] = body["dashboard"]
        handler._reply(
            200,
            {"id": 1, "uid": uid, "url": f"/d/{uid}", "status": "success", "version": 1,
             "slug": uid},
        )  # fmt: skip

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def fake_grafana() -> Iterator[FakeGrafana]:
    server = FakeGrafana()
    yield server
    server.close()


def run_push(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        crisiswatch_main(["dashboards", "push", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return int(exit_info.value.code or 0), err


def test_push_creates_the_folder_and_uploads_every_dashboard_idempotently(
    fake_grafana: FakeGrafana, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRISISWATCH_GRAFANA_TOKEN", "good-token")
    code, err = run_push(capsys, "--grafana-url", fake_grafana.url)
    assert code == 0, err
    assert "created folder crisiswatch" in err
    assert fake_grafana.folders == {"crisiswatch": "crisiswatch"}
    assert fake_grafana.dashboards == {d["uid"]: d for d in BUILT}
    first = [(m, p) for m, p, _ in fake_grafana.requests]
    assert first == [
        ("GET", "/api/folders"),
        ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * 3,
    ]

    code, err = run_push(capsys, "--grafana-url", fake_grafana.url + "/")
    assert code == 0, err
    assert "found folder crisiswatch" in err
    second = [(m, p) for m, p, _ in fake_grafana.requests[len(first) :]]
    assert second == [("GET", "/api/folders"), *[("POST", "/api/dashboards/db")] * 3]
    assert len(fake_grafana.dashboards) == 3
    assert fake_grafana.violations == []


def test_push_reads_the_token_from_a_file_and_reuses_a_folder_by_title(
    fake_grafana: FakeGrafana, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_grafana.folders["existing-uid"] = "Crisis Watch"
    token = tmp_path / "token"
    token.write_text("good-token\n")
    code, err = run_push(
        capsys, "--grafana-url", fake_grafana.url, "--token-file", str(token),
        "--folder", "Crisis Watch",
    )  # fmt: skip
    assert code == 0, err
    assert {d["uid"] for d in fake_grafana.dashboards.values()} == {d["uid"] for d in BUILT}
    assert not any(p == "/api/folders" and m == "POST" for m, p, _ in fake_grafana.requests)
    assert fake_grafana.violations == []


def test_push_with_a_bad_token_says_so_in_one_line(
    fake_grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_push(capsys, "--grafana-url", fake_grafana.url, "--token", "wrong")
    assert code == 2
    assert err.count("\n") == 1
    assert "401" in err
    assert "token" in err
    assert fake_grafana.dashboards == {}


def test_push_with_a_token_lacking_permission_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeGrafana(forbidden=True)
    try:
        code, err = run_push(capsys, "--grafana-url", server.url, "--token", "good-token")
    finally:
        server.close()
    assert code == 2
    assert err.count("\n") == 1
    assert "403" in err


def test_push_to_a_grafana_that_is_down_fails_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()  # nothing listens there
    code, err = run_push(capsys, "--grafana-url", f"http://127.0.0.1:{port}", "--token", "t")
    assert code == 1
    assert err.count("\n") == 1
    assert "cannot reach Grafana" in err
    assert "connection refused" in err


def test_push_to_a_grafana_that_does_not_answer_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError, match="did not answer"):
            grafana.push(url, "t", "crisiswatch", BUILT, timeout=0.5)
        assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "url",
    [
        "grafana.example:3000",  # no scheme
        "ftp://grafana.example",  # not HTTP
        "http://",  # no host
        "http://grafana.example:99999",  # port out of range
    ],
)
def test_push_with_a_bad_url_fails_in_one_line(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_push(capsys, "--grafana-url", url, "--token", "t")
    assert code == 2
    assert err.count("\n") == 1
    assert "--grafana-url" in err


def test_push_without_a_token_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CRISISWATCH_GRAFANA_TOKEN", raising=False)
    code, err = run_push(capsys, "--grafana-url", "http://127.0.0.1:1")
    assert code == 2
    assert "token is required" in err
    with pytest.raises(ConfigurationError):
        grafana.push("http://127.0.0.1:1", " ", "crisiswatch", BUILT)


def test_python_m_dashboards_prints_one_line_and_no_traceback() -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "dashboards", "push", "--grafana-url",
         f"http://127.0.0.1:{port}", "--token", "t"],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
