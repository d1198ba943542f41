"""The alerts are real: every rule parses (`promtool check rules`), every alert fires on series
that should fire it and stays silent on series that should not (`promtool test rules` with
tests/alerts/alerts.test.yaml), and every alert has a summary, a description and a runbook
section."""

import pathlib
import re
import shutil
import subprocess

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
RULE = ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml"
CASES = ROOT / "tests" / "alerts" / "alerts.test.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"


def groups():
    return yaml.safe_load(RULE.read_text())["spec"]["groups"]


def alerts():
    return [r for g in groups() for r in g["rules"] if "alert" in r]


def promtool(*args, cwd):
    out = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_rules_parse(tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups()}))
    promtool("check", "rules", "rules.yaml", cwd=tmp_path)


def test_every_alert_fires_and_stays_silent_as_its_cases_say(tmp_path):
    bare = [
        {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
        for g in groups()
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": bare}))
    shutil.copy(CASES, tmp_path / "alerts.test.yaml")
    promtool("test", "rules", "alerts.test.yaml", cwd=tmp_path)


def test_every_alert_has_a_firing_and_a_silent_case():
    cases = yaml.safe_load(CASES.read_text())["tests"]
    firing, silent = set(), set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - firing == set(), "alerts with no firing case"
    assert names - silent == set(), "alerts with no silent case"


def test_every_alert_is_explained_and_has_a_runbook_section():
    headings = {
        h.strip().lower() for h in re.findall(r"^## (.+)$", RUNBOOK.read_text(), re.M)
    }
    for a in alerts():
        notes = a.get("annotations", {})
        assert notes.get("summary") and notes.get("description"), a["alert"]
        anchor = a["alert"].lower()
        assert notes.get("runbook_url", "").endswith(f"docs/runbook.md#{anchor}"), a["alert"]
        assert anchor in headings, f"docs/runbook.md has no section {a['alert']}"
