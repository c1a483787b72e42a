"""Generated Prometheus rules, their promtool tests, and the Alertmanager configuration.

Pure tests check the table's arithmetic and the committed files (golden). Integration tests
run the real tools from Debian's `prometheus` and `prometheus-alertmanager` packages:
`promtool check/test rules`, `amtool check-config`, `amtool config routes test`,
`amtool template render`, and one live Alertmanager for inhibition and grouping. A missing
binary is a failure, never a skip.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from click.testing import CliRunner

from consumers.cli.rules import rules
from consumers.local.embedded import free_port
from dashboards import alert_rules
from dashboards.policy import SPEC, burn_threshold, effective_burn
from streams import names as metric_names
from streams.geography import regions
from tests.support import Webhook, binary, stop_process

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy/prometheus/rules/crisiswatch.rules.yml"
RULES_TEST = REPO / "deploy/prometheus/rules/crisiswatch.rules.test.yml"
CALENDAR_TEST = REPO / "deploy/prometheus/rules/crisiswatch.calendar.test.yml"
PROMETHEUS = REPO / "deploy/prometheus/prometheus.yml"
ALERTMANAGER_DIR = REPO / "deploy/alertmanager"
ALERTMANAGER = ALERTMANAGER_DIR / "alertmanager.yml"
Json = dict[str, Any]


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alerting_rules() -> list[Json]:
    return [r for g in load(RULES)["groups"] for r in g["rules"] if "alert" in r]


# -- the table ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alert", "threshold"),
    [
        ("CrisiswatchUcrBurnRate1h", 0.90),  # 14.4x -> the ceiling: nine in ten missed
        ("CrisiswatchUcrBurnRate6h", 0.63),  # 6x -> 2.09x of a 30% budget
        ("CrisiswatchUcrBurnRate1d", 0.47),  # 3x -> 1.57x
        ("CrisiswatchUcrBurnRate3d", 0.30),  # 1x stays 1x: exactly the month's budget
    ],
)
def test_burn_thresholds(alert: str, threshold: float) -> None:
    (tier,) = [t for t in SPEC.tiers if t.alert == alert]
    assert burn_threshold(SPEC, tier) == threshold


def test_scaled_burn_rates_are_achievable_distinct_and_keep_the_workbook_order() -> None:
    budget = SPEC.budget
    assert budget == pytest.approx(0.30)
    thresholds = [burn_threshold(SPEC, t) for t in SPEC.tiers]
    # The Workbook's factors as such: 14.4x and 6x of a 30% budget exceed a ratio of 1.
    assert [t.workbook_factor * budget > 1 for t in SPEC.tiers] == [True, True, False, False]
    # Scaled: every tier can fire, none is the same as another, faster tiers need more.
    assert all(0 < x < 1 for x in thresholds)
    assert thresholds == sorted(thresholds, reverse=True)
    assert len(set(thresholds)) == len(thresholds)
    assert max(thresholds) == SPEC.ceiling_error_ratio
    (one_x,) = [t for t in SPEC.tiers if t.workbook_factor == 1.0]
    assert effective_burn(SPEC, one_x) == 1.0
    assert burn_threshold(SPEC, one_x) == pytest.approx(budget)
    # One exponent for every tier: the Workbook's geometric spacing is kept, compressed.
    exponents = {
        round(math.log(effective_burn(SPEC, t)) / math.log(t.workbook_factor), 12)
        for t in SPEC.tiers
        if t.workbook_factor != 1.0
    }
    (k,) = exponents
    assert 0 < k < 1


def test_england_normal_month_fires_nothing() -> None:
    # England ran at 83-86% met a month in 2024-25; every region at 81.5% or better.
    worst_region_error = 1 - min(r.mean_pct_within_2h for r in regions().values()) / 100
    assert all(worst_region_error < burn_threshold(SPEC, t) for t in SPEC.tiers)


# -- the generated file ---------------------------------------------------------------------


def test_committed_rules_are_what_the_table_generates() -> None:
    """Golden file: regenerate with `python -m dashboards.alert_rules --out <it>`."""
    assert RULES.read_text(encoding="utf-8") == alert_rules.render(), (
        f"{RULES.relative_to(REPO)} is stale: "
        f"python -m dashboards.alert_rules --out {RULES.relative_to(REPO)}"
    )


def test_render_is_deterministic() -> None:
    assert alert_rules.render() == alert_rules.render()
    assert yaml.safe_load(alert_rules.render()) == alert_rules.rule_groups()


def test_rules_build_kubernetes_writes_the_committed_manifest(tmp_path: Path) -> None:
    out = tmp_path / "k8s" / "prometheusrule.yaml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "consumers.cli",
            "rules",
            "build",
            "--kubernetes",
            "--out",
            str(out),
        ],
        check=True,
        cwd=REPO,
    )
    committed = REPO / "deploy" / "kubernetes" / "prometheusrule.yaml"
    assert out.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8")


def test_rules_build_command(tmp_path: Path) -> None:
    out = tmp_path / "crisiswatch.rules.yml"
    runner = CliRunner()
    result = runner.invoke(rules, ["build", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == alert_rules.render()
    assert runner.invoke(rules, ["build", "--out", str(out), "--check"]).exit_code == 0
    out.write_text("stale\n", encoding="utf-8")
    stale = runner.invoke(rules, ["build", "--out", str(out), "--check"])
    assert stale.exit_code == 1
    assert "out of date" in stale.output
    assert out.read_text(encoding="utf-8") == "stale\n"
    printed = runner.invoke(rules, ["build"])
    assert printed.exit_code == 0
    assert printed.output == alert_rules.render()


def test_ratio_recorded_for_every_level_and_window() -> None:
    recorded = {r["record"] for g in load(RULES)["groups"] for r in g["rules"] if "record" in r}
    for window in ("1h", "6h", "1d", "7d", "28d", "5m", "30m", "2h", "3d"):
        for level in ("england", "region", "icb"):
            assert f"{level}:crisiswatch_clocks_met:ratio_rate{window}" in recorded
            assert f"{level}:crisiswatch_clocks_stopped:rate{window}" in recorded


def test_ratios_divide_summed_counters_of_the_2_hour_standard() -> None:
    rules = {
        r["record"]: r["expr"] for g in load(RULES)["groups"] for r in g["rules"] if "record" in r
    }
    for window in SPEC.windows:
        # Only the ICB level reads the counters, type-05 clocks only (pathway ucr_2h) ...
        assert rules[f"icb:crisiswatch_clocks_stopped:rate{window}"] == (
            f'sum by (region, icb) (rate(crisiswatch_clocks_stopped_total{{pathway="ucr_2h"}}[{window}]))'
        )
        assert rules[f"icb:crisiswatch_clocks_met:rate{window}"] == (
            "sum by (region, icb) (rate(crisiswatch_clocks_stopped_total"
            f'{{pathway="ucr_2h", result="met"}}[{window}]))'
        )
        # ... the others sum ICB rates and divide once: never an average of percentages.
        for level, by in (("region", "sum by (region) "), ("england", "sum")):
            stopped = f"{level}:crisiswatch_clocks_stopped:rate{window}"
            assert rules[stopped] == f"{by}(icb:crisiswatch_clocks_stopped:rate{window})"
            ratio = rules[f"{level}:crisiswatch_clocks_met:ratio_rate{window}"]
            assert f"{by}(icb:crisiswatch_clocks_met:rate{window})" in ratio
            assert ratio.endswith(f"/ ({stopped} > 0)\n")
        assert not any(
            "avg" in expr or "ratio_rate" in expr.split("/")[0] for expr in rules.values()
        )


def test_every_name_used_is_exported_or_recorded() -> None:
    groups = load(RULES)["groups"]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    exported = {
        value
        for name, value in vars(metric_names).items()
        if name.isupper() and isinstance(value, str)
    }
    functions = {"sum", "rate", "increase", "max", "time", "absent", "vector", "hour", "month"}
    functions |= {"day_of_month", "day_of_week", "and", "or", "unless", "on", "by"}
    for group in groups:
        for rule in group["rules"]:
            # Drop label matchers and range/duration brackets, then collect identifiers.
            expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\([a-z, ]*\)(?= \()", " ", rule["expr"])
            for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
                if name in functions:
                    continue
                assert name in exported | recorded | {"up"}, (name, rule.get("alert"))


def test_alerts_have_severity_and_a_runbook() -> None:
    for rule in alerting_rules():
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert set(rule["annotations"]) == {"summary", "description", "action", "dashboard"}
        assert "dashboard_url" in rule["annotations"]["dashboard"]
        # No identifier may label a Prometheus series or alert (CONTRACT section 4).
        assert not {"referral_id", "event_id", "contact_id", "patient"} & set(rule["labels"])


def test_region_alerts_keep_the_region_label_england_ones_have_none() -> None:
    for rule in alerting_rules():
        level = rule["labels"].get("level")
        if level == "region" or rule["alert"].endswith("Backlog"):
            assert "by (pathway, region)" in rule["expr"] or "region:" in rule["expr"]
            assert "?var-region={{ $labels.region }}" in rule["annotations"]["dashboard"]
        else:
            assert "region" not in rule["expr"].replace("europe_london", "")
            assert "var-region" not in rule["annotations"]["dashboard"]


def test_every_alert_has_a_firing_and_an_empty_promtool_case() -> None:
    tests = load(RULES_TEST)
    assert tests["rule_files"] == ["crisiswatch.rules.yml"]
    cases = [case for group in tests["tests"] for case in group.get("alert_rule_test", [])]
    for rule in alerting_rules():
        name, static = rule["alert"], rule["labels"]
        mine = [case for case in cases if case["alertname"] == name]
        assert any(not case.get("exp_alerts") for case in mine), f"{name}: no empty case"
        fired = [
            alert["exp_labels"]
            for case in mine
            for alert in case.get("exp_alerts") or []
            if static.items() <= alert["exp_labels"].items()
        ]
        assert fired, f"{name} {static}: no firing case"
    alertnames = {rule["alert"] for rule in alerting_rules()}
    assert {case["alertname"] for case in cases} <= alertnames


def london_offset_hours(when: datetime) -> int:
    """The recording rule's formula, in Python (kept in step with `_local_hour`)."""
    dow = (when.weekday() + 1) % 7  # PromQL day_of_week(): Sunday is 0
    month, sunday_before = when.month, when.day - dow
    return int(
        3 < month < 10
        or (month == 3 and sunday_before >= 25)
        or (month == 10 and sunday_before < 25)
    )


def test_local_hour_formula_matches_tzdata() -> None:
    """Every hour of 2000-2039 but 00:00-01:00 UTC (the documented changeover-day error)."""
    london = ZoneInfo("Europe/London")
    when = datetime(2000, 1, 1, 1, tzinfo=UTC)
    end = datetime(2040, 1, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    wrong = []
    while when < end:
        if when.hour != 0:
            offset = when.astimezone(london).utcoffset()
            assert offset is not None
            if london_offset_hours(when) * 3600 != offset.total_seconds():
                wrong.append(when)
        when += hour
    assert wrong == []
    expr = alert_rules.rule_groups()["groups"][0]["rules"][0]["expr"]
    assert "month() == 3 and day_of_month() - day_of_week() >= 25" in expr
    assert "month() == 10 and day_of_month() - day_of_week() < 25" in expr


# -- promtool -------------------------------------------------------------------------------


def run(*args: str, cwd: Path = REPO) -> str:
    result = subprocess.run(args, check=False, cwd=cwd, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output}"
    return output


@pytest.fixture(scope="session")
def promtool() -> str:
    return binary("promtool", package="prometheus")


@pytest.fixture(scope="session")
def amtool() -> str:
    return binary("amtool", package="prometheus-alertmanager")


@pytest.mark.integration
def test_promtool_check_rules(promtool: str) -> None:
    output = run(promtool, "check", "rules", str(RULES))
    assert "SUCCESS" in output


@pytest.mark.integration
def test_promtool_check_config(promtool: str) -> None:
    output = run(promtool, "check", "config", str(PROMETHEUS))
    assert "1 rule files found" in output


@pytest.mark.integration
@pytest.mark.parametrize("test_file", [RULES_TEST, CALENDAR_TEST], ids=lambda p: p.name)
def test_promtool_test_rules(promtool: str, test_file: Path) -> None:
    output = run(promtool, "test", "rules", str(test_file))
    assert "SUCCESS" in output


@pytest.mark.integration
def test_promtool_test_rules_fails_on_a_wrong_threshold(promtool: str, tmp_path: Path) -> None:
    """The promtool cases bite: a 6h tier at 71% instead of 63% fails them."""
    (tmp_path / RULES.name).write_text(
        RULES.read_text(encoding="utf-8").replace("> 0.63", "> 0.71"), encoding="utf-8"
    )
    shutil.copy(RULES_TEST, tmp_path)
    result = subprocess.run(
        [promtool, "test", "rules", RULES_TEST.name],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "CrisiswatchUcrBurnRate6h" in result.stdout + result.stderr


# -- Alertmanager configuration -------------------------------------------------------------

RECEIVERS = [
    "oncall-national",
    *(f"oncall-{code.lower()}" for code in ("Y56", "Y58", "Y59", "Y60", "Y61", "Y62", "Y63")),
    "tickets",
]


@pytest.fixture
def deployed(tmp_path: Path) -> Path:
    """A copy of deploy/alertmanager with throwaway secret files, as on a host."""
    target = tmp_path / "alertmanager"
    shutil.copytree(ALERTMANAGER_DIR, target)
    secrets = target / "secrets"
    for receiver in RECEIVERS:
        (secrets / f"{receiver}.token").write_text(f"token-{receiver}\n", encoding="utf-8")
    for name in ("pagerduty-y56.key", "opsgenie.key", "smtp.password"):
        (secrets / name).write_text("example\n", encoding="utf-8")
    return target / "alertmanager.yml"


def test_every_receiver_reads_its_secret_from_a_file() -> None:
    config = load(ALERTMANAGER)
    names = [r["name"] for r in config["receivers"]]
    assert names == RECEIVERS
    for receiver in config["receivers"]:
        (hook,) = receiver["webhook_configs"]
        assert hook["url"].startswith(f"http://{receiver['name']}.example.invalid/")
        credentials = hook["http_config"]["authorization"]["credentials_file"]
        assert credentials == f"secrets/{receiver['name']}.token"
    readme = (ALERTMANAGER_DIR / "secrets/README.md").read_text(encoding="utf-8")
    assert "oncall-y56.token" in readme
    assert "tickets.token" in readme


def test_page_route_for_every_region_of_the_reference_data() -> None:
    routes = load(ALERTMANAGER)["route"]["routes"]
    paged = {
        m.split('"')[1]: route["receiver"]
        for route in routes
        for m in route["matchers"]
        if m.startswith("region=")
    }
    assert paged == {code: f"oncall-{code.lower()}" for code in regions()}


@pytest.mark.integration
def test_amtool_check_config(amtool: str, deployed: Path) -> None:
    output = run(amtool, "check-config", str(deployed))
    assert "9 receivers" in output
    assert "2 inhibit rules" in output
    assert "1 templates" in output


@pytest.mark.integration
def test_amtool_check_config_of_the_commented_examples(amtool: str, deployed: Path) -> None:
    """The PagerDuty, Opsgenie and e-mail examples, uncommented, are valid configuration."""
    text = deployed.read_text(encoding="utf-8")
    block = text.split("# -- examples: begin\n")[1].split("# -- examples: end")[0]
    examples = yaml.safe_load("\n".join(line[1:] for line in block.splitlines()))
    config = yaml.safe_load(text)
    by_name = {r["name"]: r for r in config["receivers"]}
    assert [e["name"] for e in examples] == ["oncall-y56", "oncall-y58", "tickets"]
    for example in examples:
        by_name[example["name"]] = example
    config["receivers"] = list(by_name.values())
    deployed.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    output = run(amtool, "check-config", str(deployed))
    assert "9 receivers" in output


# The routes a page or ticket takes: (labels, receiver).
ROUTES = [
    *[
        ({"alertname": "ReferralAtRisk", "severity": "page", "region": code}, receiver)
        for code, receiver in (
            ("Y56", "oncall-y56"),
            ("Y58", "oncall-y58"),
            ("Y59", "oncall-y59"),
            ("Y60", "oncall-y60"),
            ("Y61", "oncall-y61"),
            ("Y62", "oncall-y62"),
            ("Y63", "oncall-y63"),
        )
    ],
    # Region not known from the referral: the national on-call.
    ({"alertname": "ReferralAtRisk", "severity": "page", "region": "unknown"}, "oncall-national"),
    # Rule alerts of a region page that region too.
    (
        {"alertname": "CrisiswatchUcrBurnRate1h", "severity": "page", "region": "Y60"},
        "oncall-y60",
    ),
    ({"alertname": "CrisiswatchAtRiskBacklog", "severity": "page", "region": "Y63"}, "oncall-y63"),
    # England-wide and pipeline pages have no region: national.
    (
        {"alertname": "CrisiswatchUcrBurnRate1h", "severity": "page", "level": "england"},
        "oncall-national",
    ),
    ({"alertname": "CrisiswatchWorkerDown", "severity": "page"}, "oncall-national"),
    # Tickets, any region or none: the ticket queue.
    ({"alertname": "ReferralBreached", "severity": "ticket", "region": "Y56"}, "tickets"),
    ({"alertname": "CrisiswatchUcrBurnRate3d", "severity": "ticket", "region": "Y62"}, "tickets"),
    ({"alertname": "CrisiswatchEventsRejected", "severity": "ticket"}, "tickets"),
    # A severity nobody expected is not dropped.
    ({"alertname": "Something", "severity": "warning", "region": "Y56"}, "oncall-national"),
]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("labels", "receiver"), ROUTES, ids=lambda x: ",".join(x.values()) if isinstance(x, dict) else x
)
def test_amtool_routes(amtool: str, labels: dict[str, str], receiver: str) -> None:
    output = run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER}",
        f"--verify.receivers={receiver}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert output.splitlines()[0] == receiver


def test_routes_cover_every_alert_the_rules_raise() -> None:
    """Each rule's severity is routed; the test table above has a case for each kind."""
    severities = {rule["labels"]["severity"] for rule in alerting_rules()}
    assert severities == {"page", "ticket"}


@pytest.mark.integration
def test_notification_template_lists_a_regions_referrals(amtool: str, tmp_path: Path) -> None:
    def alert(referral: str, status: str, summary: str) -> Json:
        labels = {"alertname": "ReferralAtRisk", "region": "Y56", "severity": "page"}
        return {
            "status": status,
            "labels": {**labels, "referral_id": referral},
            "annotations": {
                "summary": summary,
                "action": "Get a clinician to the patient face to face before the deadline.",
                "dashboard": f"https://grafana.example.invalid/d/crisiswatch?var-referral={referral}",
            },
        }

    data = {
        "receiver": "oncall-y56",
        "status": "firing",
        "alerts": [
            alert("r-1", "firing", "2-hour urgent response referral r-1 at risk: 95 min waiting"),
            alert("r-2", "firing", "2-hour urgent response referral r-2 at risk: 101 min waiting"),
            alert("r-3", "resolved", "2-hour urgent response referral r-3 resolved: met"),
        ],
        "groupLabels": {"alertname": "ReferralAtRisk", "region": "Y56"},
        "commonLabels": {"alertname": "ReferralAtRisk", "region": "Y56", "severity": "page"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.invalid",
    }
    (tmp_path / "data.json").write_text(json.dumps(data), encoding="utf-8")
    output = run(
        amtool,
        "template",
        "render",
        f"--template.glob={ALERTMANAGER_DIR / 'templates' / '*.tmpl'}",
        f"--template.data={tmp_path / 'data.json'}",
        '--template.text={{ template "crisiswatch.title" . }}\n{{ template "crisiswatch.text" . }}',
    )
    assert output.splitlines()[:4] == [
        "[FIRING 2] ReferralAtRisk Y56",
        "2 firing (page):",
        "- 2-hour urgent response referral r-1 at risk: 95 min waiting",
        "  To do: Get a clinician to the patient face to face before the deadline.",
    ]
    assert "r-2 at risk: 101 min waiting" in output
    assert "1 resolved:\n- 2-hour urgent response referral r-3 resolved: met" in output


# -- a live Alertmanager with the deployed configuration ------------------------------------


@pytest.fixture
def live_alertmanager(deployed: Path, webhook: Webhook) -> Iterator[str]:
    """The deployed configuration with webhooks pointed at `webhook` (path = receiver name)
    and a 1-second group wait; routes, grouping, inhibition and secrets files unchanged."""
    config = load(deployed)
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = f"{webhook.url}/{receiver['name']}"
    config["route"]["group_wait"] = "1s"
    for route in config["route"]["routes"]:
        if "group_wait" in route:
            route["group_wait"] = "1s"
    deployed.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    port = free_port()
    log = deployed.parent / "alertmanager.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                binary(
                    "alertmanager", "prometheus-alertmanager", package="prometheus-alertmanager"
                ),
                f"--config.file={deployed}",
                f"--storage.path={deployed.parent / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"alertmanager exited:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"alertmanager not ready:\n{log.read_text()[-3000:]}")
                time.sleep(0.05)
        yield url
    finally:
        stop_process(process)


def referral(alertname: str, referral_id: str, region: str, severity: str = "page") -> Json:
    return {
        "labels": {
            "alertname": alertname,
            "severity": severity,
            "region": region,
            "icb": "QKK",
            "pathway": "ucr_2h",
            "referral_id": referral_id,
        },
        "annotations": {"summary": f"referral {referral_id}"},
    }


@pytest.mark.integration
def test_live_grouping_inhibition_and_credentials(live_alertmanager: str, webhook: Webhook) -> None:
    alerts = [
        referral("ReferralAtRisk", "r-1", "Y56"),
        referral("ReferralAtRisk", "r-2", "Y56"),
        referral("ReferralAtRisk", "r-3", "Y56"),  # also breached: its at-risk page is silenced
        referral("ReferralBreached", "r-3", "Y56"),
        referral("ReferralAtRisk", "r-4", "Y58"),
        {"labels": {"alertname": "CrisiswatchWorkerDown", "severity": "page"}},
        {"labels": {"alertname": "CrisiswatchDataDelay", "severity": "page"}},  # inhibited
    ]
    request = urllib.request.Request(
        f"{live_alertmanager}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200

    def groups() -> dict[tuple[str, str], set[str]]:
        seen: dict[tuple[str, str], set[str]] = {}
        for path, authorization, body in webhook.notifications():
            receiver = path.strip("/")
            assert authorization == f"Bearer token-{receiver}"
            key = (receiver, body["groupLabels"]["alertname"])
            seen.setdefault(key, set()).update(
                a["labels"].get("referral_id", "-") for a in body["alerts"]
            )
        return seen

    expected = {
        ("oncall-y56", "ReferralAtRisk"): {"r-1", "r-2"},
        ("oncall-y56", "ReferralBreached"): {"r-3"},
        ("oncall-y58", "ReferralAtRisk"): {"r-4"},
        ("oncall-national", "CrisiswatchWorkerDown"): {"-"},
    }
    deadline = time.monotonic() + 20
    while groups() != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # anything inhibited would have arrived by now (group wait 1s)
    assert groups() == expected
    # One page lists the region's at-risk referrals.
    y56 = [
        body
        for path, _, body in webhook.notifications()
        if path == "/oncall-y56" and body["groupLabels"]["alertname"] == "ReferralAtRisk"
    ]
    assert len(y56) == 1
    assert len(y56[0]["alerts"]) == 2


def test_rules_check_fails_on_a_stale_file_through_the_entry_point(tmp_path: Path) -> None:
    """`--check` must exit non-zero from the installed command, not just under CliRunner."""
    from tests.support import crisiswatch

    stale = tmp_path / "rules.yml"
    stale.write_text("groups: []\n", encoding="utf-8")
    result = subprocess.run(
        [crisiswatch(), "rules", "build", "--check", "--out", str(stale)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "out of date" in result.stdout + result.stderr
