"""deploy/compose/docker-compose.yml against the Compose specification, and its promises.

No Docker engine runs where this is built, so the stack is *validated*, not run: the file must
satisfy the Compose specification's JSON Schema, and the checks below pin what the issue asks
(health checks, named volumes, no secrets, 2+ workers, the generated rules mounted).

`tests/data/compose-spec.json` is the Compose specification schema (JSON Schema 2019-09) as
shipped in the `docker-compose` 1.29.2 wheel on PyPI (`compose/config/compose_spec.json`,
Apache-2.0, from github.com/compose-spec/compose-spec). It predates a few newer keys (top-level
`name`, `develop`), which the file therefore does not use. No maintained PyPI package bundles a
newer copy; refresh it from the compose-spec repository when upgrading.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose" / "docker-compose.yml"
SCHEMA = Path(__file__).parents[1] / "data" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())  # resolves the x-crisiswatch anchors
    assert isinstance(loaded, dict)
    return loaded


def test_the_file_satisfies_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_catches_mistakes(compose: dict[str, Any]) -> None:
    """Guard the guard: a misspelt key and a wrong type must fail validation."""
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["helthcheck"] = {}
    assert not validator.is_valid(broken)
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["deploy"]["replicas"] = "two"
    assert not validator.is_valid(broken)


def test_the_stack_has_every_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {
        "kafka", "postgres", "prometheus", "alertmanager", "grafana", "init", "worker",
        "export", "simulator",
    }  # fmt: skip
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["simulator"]["profiles"] == ["simulator"]
    init = " ".join(services["init"]["command"])
    assert "db migrate" in init
    assert "topics create" in init
    assert services["worker"]["depends_on"]["init"]["condition"] == (
        "service_completed_successfully"
    )


def test_long_running_services_have_health_checks_and_named_volumes(
    compose: dict[str, Any],
) -> None:
    one_shot = {"init", "simulator", "export"}
    for name, service in compose["services"].items():
        check = service.get("healthcheck", {})
        if name in one_shot:
            continue
        assert check.get("test"), f"{name} has no health check"
        assert not check.get("disable"), name
    assert "/health" in " ".join(compose["services"]["worker"]["healthcheck"]["test"])
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):  # a bind mount of the repository: it must exist
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} missing"
            else:
                assert source in declared, f"{name}: volume {source} not declared"


def test_the_generated_rules_and_configuration_are_mounted(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]["volumes"]
    assert "../prometheus/rules:/etc/prometheus/rules:ro" in prometheus
    config = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules/crisiswatch.rules.yml"]
    assert config["scrape_configs"][0]["job_name"] == "crisiswatch-worker"  # the rules' job
    assert (REPO / "deploy" / "prometheus" / "rules" / "crisiswatch.rules.yml").is_file()
    assert "../alertmanager:/etc/alertmanager:ro" in compose["services"]["alertmanager"]["volumes"]
    grafana = compose["services"]["grafana"]["volumes"]
    assert "../grafana/provisioning:/etc/grafana/provisioning:ro" in grafana


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY$", re.IGNORECASE)


def test_no_secret_is_in_the_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if variable.endswith("_FILE") and str(value).startswith("/run/secrets/"):
                continue  # a pointer to a mounted secret, not the secret
            if SECRET_NAME.search(variable):
                pytest.fail(f"{name}: {variable}={value!r} is a secret in the file")
        assert not re.search(r"://[^/@\s]+:[^/@\s]+@", json.dumps(service)), name  # user:pw@
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    ignored = (COMPOSE.parent / "secrets" / ".gitignore").read_text().split()
    assert ignored[0] == "*"
    assert "crisiswatch.env" in (COMPOSE.parent / ".gitignore").read_text().split()


def test_the_image_runs_as_a_non_root_user_with_a_health_check() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert "pip install ." in dockerfile
    user = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert user
    assert not user[-1].startswith(("root", "0"))
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", dockerfile, re.MULTILINE)
