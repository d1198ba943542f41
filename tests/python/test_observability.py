"""What the deployment files say matches what the daemon does, checked against a daemon started
here against the local stack that runs one export:

- the dashboard and the alert rules: every PromQL expression parses (`promtool check rules`)
  and names only metrics in the daemon's /metrics;
- least privilege: the IAM actions of deploy/iam-policy.json are exactly those the daemon's
  code can call (every AWS call names its operation for the error classifier), plus what the
  configuration in deploy/k8s/base/configmap.yaml implies; and every call the running daemon made
  is among those."""

import json
import os
import tomllib
import uuid
import pathlib
import re
import subprocess
import time
import urllib.request

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "redshift-export-worker.json"
RULE = ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml"
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
def scraped():
    """The /metrics of a daemon that ran one export on a queue of its own."""
    import boto3

    assert BINARY.exists(), f"{BINARY} is built by the Rust tests (cargo nextest) first"
    sqs = boto3.client("sqs")
    name = f"observability-{uuid.uuid4().hex[:8]}"
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    request = {"version": 1, "query": "product_detail_by_sku", "params": {"sku": "FLOWER12"}}
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(request))
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "PATH", "HOME"))}
    env.update(
        {
            "EXPORT_WORKER__QUEUE__URL": queue,
            "EXPORT_WORKER__QUEUE__DEAD_LETTER_URL": dlq,
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
        done = 'redshift_export_jobs_total{error_code="",outcome="completed"} 1'
        while time.monotonic() < deadline:
            text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
            if done in text:
                break
            time.sleep(0.5)
        assert done in text, "the export did not complete within a minute"
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    return text


@pytest.fixture(scope="module")
def exported(scraped):
    text = scraped
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


# How each operation the daemon calls is authorised.
def iam_actions(service, operation):
    if service == "dynamodb" and operation == "TransactWriteItems":
        # A transaction is authorised item by item: the worker's hold one Put and one Update.
        return {"dynamodb:PutItem", "dynamodb:UpdateItem"}
    if service == "s3":
        return {
            "PutObject": {"s3:PutObject"},
            "CreateMultipartUpload": {"s3:PutObject"},
            "UploadPart": {"s3:PutObject"},
            "CompleteMultipartUpload": {"s3:PutObject"},
            "AbortMultipartUpload": {"s3:AbortMultipartUpload"},
            "GetObject": {"s3:GetObject"},
            "HeadObject": {"s3:GetObject"},
            # A presigned link is a GET made with the worker's permissions.
            "presign": {"s3:GetObject"},
            "ListObjectsV2": {"s3:ListBucket"},
            "DeleteObjects": {"s3:DeleteObject"},
        }[operation]
    prefix = {"sesv2": "ses"}.get(service, service)
    return {f"{prefix}:{operation}"}


def operations_in_code():
    """(service, operation) of every AWS call in src/: each goes through the classifier, which
    names both (`.aws("sqs", "ReceiveMessage")`, `AwsError::from_sdk("dynamodb", …)`), or through
    the state store's `written("UpdateItem", …)` for DynamoDB's conditional writes."""
    found = set()
    for path in (ROOT / "src").rglob("*.rs"):
        text = path.read_text()
        found |= set(re.findall(r'(?:\.aws|from_sdk)\(\s*"([a-z0-9-]+)",\s*"([A-Za-z0-9]+)"', text))
        # The state store's conditional writes go through `written("UpdateItem", …)`.
        found |= {("dynamodb", op) for op in re.findall(r'\bwritten\(\s*"([A-Za-z]+)"', text)}
    return found


def actions_for_configuration():
    config = tomllib.loads(
        yaml.safe_load((ROOT / "deploy" / "k8s" / "base" / "configmap.yaml").read_text())["data"]["config.toml"]
    )
    actions = set()
    if config["redshift"].get("secret_arn"):
        actions.add("secretsmanager:GetSecretValue")
    if config["redshift"].get("db_user"):
        actions.add("redshift:GetClusterCredentials")
    if config["archive"].get("server_side_encryption") == "aws:kms":
        actions |= {"kms:GenerateDataKey", "kms:Decrypt"}
    return actions


def policy():
    return json.loads((ROOT / "deploy" / "iam-policy.json").read_text())["Statement"]


def test_the_policy_grants_exactly_what_the_code_calls():
    needed = set().union(*(iam_actions(s, o) for s, o in operations_in_code()))
    needed |= actions_for_configuration()
    granted = {a for st in policy() for a in st["Action"]}
    assert needed - granted == set(), "actions missing from deploy/iam-policy.json"
    assert granted - needed == set(), "actions granted that the daemon never uses"


def test_every_call_the_daemon_made_is_one_the_code_names(scraped):
    made = set(
        re.findall(
            r'redshift_export_aws_requests_total\{operation="(\w+)",outcome="\w+",service="([\w-]+)"\}',
            scraped,
        )
    )
    assert made, "no AWS call was counted"
    named = {o for _, o in operations_in_code()}
    assert {o for o, _ in made} - named == set()


def test_a_small_archive_goes_up_in_one_put_object(scraped):
    made = {
        o
        for o, n in re.findall(r'redshift_export_aws_requests_total\{operation="(\w+)",outcome="ok",service="S3"\} (\S+)', scraped)
        if float(n) > 0
    }
    assert "PutObject" in made, made
    assert not made & {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}, made


def test_a_clean_export_counts_only_requests_that_were_sent(scraped):
    # Presigning the link runs the SDK's pipeline up to signing; it sends nothing and must not
    # be counted as a GetObject without a response (which the alerts read as a failing S3).
    failed = [
        (o, outcome, n)
        for o, outcome, n in re.findall(r'redshift_export_aws_requests_total\{operation="(\w+)",outcome="(\w+)",service="[\w -]+"\} (\S+)', scraped)
        if outcome != "ok" and float(n) > 0
    ]
    assert failed == []


def test_the_policy_is_scoped():
    by_action = {}
    for st in policy():
        for a in st["Action"]:
            by_action.setdefault(a, []).append(st)
    for st in by_action["s3:ListBucket"]:
        assert "s3:prefix" in st["Condition"]["StringLike"], "ListBucket only under a prefix"
    for st in by_action["redshift-data:ExecuteStatement"]:
        assert st["Resource"].startswith("arn:aws:redshift"), "ExecuteStatement on the cluster only"
    for action in ["kms:GenerateDataKey", "kms:Decrypt"]:
        for st in by_action[action]:
            assert "kms:ViaService" in st["Condition"]["StringEquals"]
    for st in policy():
        assert st["Resource"] != "*" or "Condition" in st or st["Action"] == ["ses:GetEmailIdentity"], st["Sid"]


def test_the_unload_role_and_the_trust_policy_are_there():
    unload = json.loads((ROOT / "deploy" / "iam" / "unload-role-policy.json").read_text())
    assert "s3:PutObject" in {a for st in unload["Statement"] for a in st["Action"]}
    trust = json.loads((ROOT / "deploy" / "iam" / "irsa-trust-policy.json").read_text())
    assert trust["Statement"][0]["Action"] == "sts:AssumeRoleWithWebIdentity"
