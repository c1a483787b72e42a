"""deploy/kubernetes/ validated offline: built-in kinds against the Kubernetes OpenAPI schemas
bundled in `kubernetes-validate` (strict: unknown fields fail), the Prometheus Operator objects
against the minimal schemas below (kubernetes-validate has no CRD schemas), and the
PrometheusRule as a golden file of `dashboards.k8s_rules`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from dashboards import k8s_rules
from dashboards.alert_rules import rule_groups

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # spec.timeZone of the export CronJob needs 1.27+

_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "labels": _LABELS},
}
_RULE = {
    "type": "object",
    "required": ["expr"],
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
    "properties": {
        "record": {"type": "string"},
        "alert": {"type": "string"},
        "expr": {"type": "string"},
        "for": {"type": "string", "pattern": "^[0-9]+[smhd]$"},
        "labels": _LABELS,
        "annotations": _LABELS,
    },
    "additionalProperties": False,
}
# Minimal structural schemas of monitoring.coreos.com/v1 (the fields we use; unknown ones fail).
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["groups"],
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "interval": {"type": "string", "pattern": "^[0-9]+[smhd]$"},
                                "rules": {"type": "array", "items": _RULE},
                            },
                        },
                    }
                },
            },
        },
    },
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "jobLabel": {"type": "string"},
                    "selector": {
                        "type": "object",
                        "properties": {"matchLabels": _LABELS},
                        "additionalProperties": False,
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": {"type": "string"},
                                "scrapeTimeout": {"type": "string"},
                                "relabelings": {"type": "array", "items": {"type": "object"}},
                            },
                        },
                    },
                },
            },
        },
    },
}


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                found.append((f"{path.name}:{document['kind']}", document))
    return found


DOCUMENTS = documents()


@pytest.mark.parametrize(("name", "document"), DOCUMENTS, ids=[n for n, _ in DOCUMENTS])
def test_every_manifest_is_valid(name: str, document: dict[str, Any]) -> None:
    if document["kind"] in CRD_SCHEMAS:
        jsonschema.Draft202012Validator(CRD_SCHEMAS[document["kind"]]).validate(document)
    else:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_validator_catches_mistakes() -> None:
    worker = next(d for n, d in DOCUMENTS if n == "worker.yaml:Deployment")
    broken = yaml.safe_load(yaml.safe_dump(worker))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_prometheus_rule_is_generated_from_the_same_rules() -> None:
    committed = (MANIFESTS / "prometheusrule.yaml").read_text()
    assert committed == k8s_rules.render(), (
        "regenerate: python -m dashboards.k8s_rules --out deploy/kubernetes/prometheusrule.yaml"
    )
    assert yaml.safe_load(committed)["spec"] == rule_groups()
    committed_prometheus = yaml.safe_load(
        (REPO / "deploy" / "prometheus" / "rules" / "crisiswatch.rules.yml").read_text()
    )
    assert yaml.safe_load(committed)["spec"] == committed_prometheus


def test_workers_fit_the_partitions_and_shut_down_gracefully() -> None:
    kinds = dict(DOCUMENTS)
    deployment = kinds["worker.yaml:Deployment"]
    init = kinds["init-job.yaml:Job"]
    partitions = int(init["spec"]["template"]["spec"]["containers"][0]["args"][0].split()[-1])
    replicas = deployment["spec"]["replicas"]
    assert 1 <= replicas <= partitions
    assert partitions % replicas == 0  # every worker owns as many partitions
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert container["lifecycle"]["preStop"]
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    secrets = [e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e]
    assert "crisiswatch-database" in secrets
    for variable in container["env"]:  # a password is a Secret or a mounted Secret's file
        if "value" in variable and "PASSWORD" in variable["name"]:
            assert variable["name"].endswith("_FILE"), variable
            assert variable["value"].startswith("/run/secrets/"), variable
    settings = {e["name"]: e.get("value") for e in container["env"]}
    assert settings["CRISISWATCH_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    kafka_secret = volumes[mounts["/run/secrets/kafka"]]["secret"]["secretName"]
    assert kafka_secret == "crisiswatch-kafka"
    assert {"worker.yaml:Service", "networkpolicy.yaml:NetworkPolicy",
            "servicemonitor.yaml:ServiceMonitor", "prometheusrule.yaml:PrometheusRule",
            "export-cronjob.yaml:CronJob"} <= set(kinds)  # fmt: skip
    monitor = kinds["servicemonitor.yaml:ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"] == kinds["worker.yaml:Service"]["spec"]["selector"]
