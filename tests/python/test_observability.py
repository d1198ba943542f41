"""The dashboard and the alert rules speak of what the daemon really exports: every PromQL
expression in them parses (`promtool check rules`), and every metric they name is in the
/metrics of a running daemon (started here against the local stack)."""

import json
import os
import pathlib
import re
import subprocess
import time
import urllib.request

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "redshift-export-worker.json"
RULE = ROOT / "deploy" / "k8s" / "prometheusrule.yaml"
BINARY = ROOT / "target" / "debug" / "redshift-export-worker"
# Series Prometheus makes itself, not the daemon.
FROM_PROMETHEUS = {"up"}
# Grafana's variables, as Prometheus would see them after Grafana replaced them.
GRAFANA = {"$__rate_interval": "5m", "$__interval": "1m", "$instance": ".*"}


def dashboard_exprs():
    d = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    for v in d["templating"]["list"]:
        q = v.get("query")
        if isinstance(q, dict):
            # label_values(metric, label) names a metric too.
            exprs.append(re.sub(r"^label_values\((\w+),.*\)$", r"\1", q["query"]))
    return exprs


def rule_exprs():
    spec = yaml.safe_load(RULE.read_text())["spec"]
    return [r["expr"] for g in spec["groups"] for r in g["rules"]]


def grafana_free(expr):
    for var, value in GRAFANA.items():
        expr = expr.replace(var, value)
    return expr


@pytest.fixture(scope="module")
def exported():
    assert BINARY.exists(), f"{BINARY} is built by the Rust tests (cargo nextest) first"
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "PATH", "HOME"))}
    env.update(
        {
            "EXPORT_WORKER__QUEUE__URL": os.environ["DEVSTACK_QUEUE_URL"],
            "EXPORT_WORKER__QUEUE__DEAD_LETTER_URL": os.environ["DEVSTACK_DLQ_URL"],
            "EXPORT_WORKER__EMAIL__SMTP__HOST": os.environ["DEVSTACK_SMTP_HOST"],
            "EXPORT_WORKER__EMAIL__SMTP__PORT": os.environ["DEVSTACK_SMTP_PORT"],
            "EXPORT_WORKER__ADMIN__LISTEN": "127.0.0.1:0",
            "EXPORT_WORKER__SWEEPER__ENABLED": "false",
            "EXPORT_WORKER__LOGGING__FORMAT": "json",
        }
    )
    daemon = subprocess.Popen(
        [str(BINARY), "run", "--config", str(ROOT / "config" / "local.toml")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = None
        deadline = time.monotonic() + 60
        while address is None and time.monotonic() < deadline:
            line = daemon.stderr.readline()
            if not line:
                break
            if "admin listener started" in line:
                address = json.loads(line)["addr"]
        assert address, "the daemon did not report its admin address"
        text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    names = {
        re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert "redshift_export_jobs_total" in names and "process_cpu_seconds_total" in names
    return names


def named_metrics(expr):
    return set(re.findall(r"\b(redshift_export_[a-z0-9_]+|process_[a-z0-9_]+|up)\b", expr))


def test_every_expression_parses(tmp_path):
    exprs = [grafana_free(e) for e in dashboard_exprs() + rule_exprs()]
    rules = {
        "groups": [
            {
                "name": "parse",
                "rules": [{"record": f"check:expr_{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    out = subprocess.run(
        ["promtool", "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_and_rules_name_only_exported_metrics(exported):
    for expr in dashboard_exprs() + rule_exprs():
        unknown = named_metrics(expr) - exported - FROM_PROMETHEUS
        assert not unknown, f"{expr} names {unknown}, which the daemon does not export"


def test_dashboard_has_a_datasource_variable_and_the_panels_an_sre_expects():
    d = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
    titles = " ".join(p["title"].lower() for p in d["panels"])
    for topic in ["throughput", "error code", "latency", "in flight", "queue", "aws", "memory", "cpu"]:
        assert topic in titles, topic
