"""The deployment files agree with the daemon: manifests parse, probes hit the admin port the
ConfigMap's configuration listens on, and the pod's grace period outlasts the worker's."""

import json
import pathlib
import re
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


def docs():
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc:
                out.setdefault(doc["kind"], doc)
    return out


def test_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_probes_and_grace_period_match_the_configuration():
    d = docs()
    config = tomllib.loads(d["ConfigMap"]["data"]["config.toml"])
    port = int(config["admin"]["listen"].rsplit(":", 1)[1])
    pod = d["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {p["containerPort"] for p in container["ports"]} == {port}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] > config["worker"]["shutdown_grace_secs"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_systemd_stop_timeout_outlasts_the_grace_period():
    unit = (ROOT / "deploy" / "systemd" / "redshift-export-worker.service").read_text()
    stop = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1))
    default = tomllib.loads((ROOT / "config" / "default.toml").read_text())
    assert stop > default["worker"]["shutdown_grace_secs"]
    assert re.search(r"^Type=notify$", unit, re.M)


def test_iam_policy_is_valid_json():
    policy = json.loads((ROOT / "deploy" / "iam-policy.json").read_text())
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert "redshift-data:ExecuteStatement" in actions and "sqs:ReceiveMessage" in actions
