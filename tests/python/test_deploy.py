"""The deployment files agree with the daemon: manifests parse, probes hit the admin port the
ConfigMap's configuration listens on, and the pod's grace period outlasts the worker's."""

import json
import pathlib
import re
import subprocess
import tomllib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s" / "base"


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


UNIT = ROOT / "deploy" / "systemd" / "redshift-export-worker.service"


def test_systemd_sandbox_rates_at_most_1_2():
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    level = float(re.search(r"Overall exposure level for .*: (\d+\.\d+)", out).group(1))
    assert level <= 1.2, out


def test_systemd_never_restarts_on_a_bad_configuration():
    unit = UNIT.read_text()
    # A failing ExecStartPre restarts the unit for ever; the daemon checks its configuration.
    assert not re.search(r"^ExecStartPre=", unit, re.M)
    assert re.search(r"^RestartPreventExitStatus=.*\b64\b", unit, re.M)
    assert re.search(r"^Restart=on-failure$", unit, re.M)
    unit_section = unit.split("[Service]")[0]
    assert re.search(r"^StartLimitBurst=\d+$", unit_section, re.M)
    # Longer than the receive loop's stall limit (about 215 s with the default wait) plus a ping
    # interval's slack, so only a loop that really stopped is killed.
    assert int(re.search(r"^WatchdogSec=(\d+)$", unit, re.M).group(1)) >= 300


def test_systemd_stop_timeout_outlasts_the_grace_period():
    unit = UNIT.read_text()
    stop = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1))
    default = tomllib.loads((ROOT / "config" / "default.toml").read_text())
    assert stop > default["worker"]["shutdown_grace_secs"]
    assert re.search(r"^Type=notify$", unit, re.M)


def test_iam_policy_is_valid_json():
    policy = json.loads((ROOT / "deploy" / "iam-policy.json").read_text())
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert "redshift-data:ExecuteStatement" in actions and "sqs:ReceiveMessage" in actions


def kustomize(path):
    out = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_the_base_and_the_overlay_build_as_sres_run_them():
    default = tomllib.loads((ROOT / "config" / "default.toml").read_text())
    for path, registry in [
        (K8S, "registry.example.com/"),
        (ROOT / "deploy" / "k8s" / "overlays" / "example", "123456789012.dkr.ecr."),
    ]:
        objects = {d["kind"]: d for d in kustomize(path)}
        pod = objects["Deployment"]["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"].startswith(registry), path
        assert pod["automountServiceAccountToken"] is False
        assert objects["ServiceAccount"]["automountServiceAccountToken"] is False
        assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        }
        policy = objects["NetworkPolicy"]["spec"]
        assert policy["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9464}]
        assert policy["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "monitoring"
        }
        for kind in ["ServiceMonitor", "PrometheusRule"]:
            assert objects[kind]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        config = tomllib.loads(objects["ConfigMap"]["data"]["config.toml"])
        slots = config.get("worker", {}).get(
            "max_concurrent_jobs", default["worker"]["max_concurrent_jobs"]
        )
        trigger = objects["ScaledObject"]["spec"]["triggers"][0]["metadata"]
        assert int(trigger["queueLength"]) == slots, "one replica per job slots' worth of messages"


# The Kubernetes version the core objects are checked against (kubernetes-validate's schemas).
KUBERNETES = "1.30"
CUSTOM = {
    "ScaledObject": "scaledobject.json",
    "TriggerAuthentication": "triggerauthentication.json",
    "ServiceMonitor": "servicemonitor.json",
    "PrometheusRule": "prometheusrule.json",
}


def test_every_object_validates_against_its_schema():
    import jsonschema
    import kubernetes_validate

    schemas = ROOT / "tests" / "k8s-schemas"
    for path in [K8S, ROOT / "deploy" / "k8s" / "overlays" / "example"]:
        for obj in kustomize(path):
            kind = obj["kind"]
            if kind in CUSTOM:
                schema = json.loads((schemas / CUSTOM[kind]).read_text())
                jsonschema.validate(obj, schema)
            else:
                kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_a_misspelt_field_is_caught():
    import jsonschema
    import kubernetes_validate

    objects = {d["kind"]: d for d in kustomize(K8S)}
    deployment = objects["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
    scaled = objects["ScaledObject"]
    scaled["spec"]["maxReplicas"] = 10
    schema = json.loads((ROOT / "tests" / "k8s-schemas" / "scaledobject.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, schema)


def test_every_deployment_runs_the_allocator_the_same_way():
    # docs/ARCHITECTURE.md, "Memory": the peak RSS figures are measured with these settings.
    found = {
        "systemd": re.search(r"^Environment=GLIBC_TUNABLES=(\S+)$", (ROOT / "deploy/systemd/redshift-export-worker.service").read_text(), re.M),
        "image": re.search(r"GLIBC_TUNABLES=(\S+)", (ROOT / "deploy/container/Containerfile").read_text()),
        "bench": re.search(r'^GLIBC_TUNABLES = "(\S+)"$', (ROOT / "scripts/bench.py").read_text(), re.M),
    }
    deployment = yaml.safe_load((ROOT / "deploy/k8s/base/deployment.yaml").read_text())
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    values = {name: m.group(1) if m else None for name, m in found.items()}
    values["kubernetes"] = next((e["value"] for e in env if e["name"] == "GLIBC_TUNABLES"), None)
    assert set(values.values()) == {"glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=1048576"}, values


def test_every_deployment_gives_the_spill_directory_a_disk():
    # docs/ARCHITECTURE.md, "The archive formats": parts are kept in archive.spill_dir between
    # their two reads; a read-only or missing directory only costs a second GET, so nothing
    # else would notice it missing.
    default = tomllib.loads((ROOT / "config/default.toml").read_text())["archive"]
    d = docs()
    config = tomllib.loads(d["ConfigMap"]["data"]["config.toml"]).get("archive", {})
    spill_dir = config.get("spill_dir", default["spill_dir"])
    spill_mib = config.get("spill_mib", default["spill_mib"])
    pod = d["Deployment"]["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == spill_dir)
    assert not mount.get("readOnly", False)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"].get("medium") != "Memory", "a tmpfs spill would be memory"
    size = re.fullmatch(r"(\d+)Mi", volume["emptyDir"]["sizeLimit"])
    assert size and int(size.group(1)) >= spill_mib
    # The unit's PrivateTmp= mounts a private, writable /var/tmp under ProtectSystem=strict.
    assert spill_dir == "/var/tmp"
    assert re.search(r"^PrivateTmp=yes$", UNIT.read_text(), re.M)
    # The image has the directory, writable by the non-root user.
    build = (ROOT / "deploy/container/build").read_text()
    assert re.search(r'^chmod 1777 .*"\$context/rootfs/var/tmp"', build, re.M)
