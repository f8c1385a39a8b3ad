"""The shipped monitoring (deploy/prometheus, deploy/alertmanager, deploy/grafana) is
accepted by the tools that read it, and names only series killgate exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from gateway.telemetry.metrics import HELP
from tests.conftest import ROOT

RULES = ROOT / "deploy/prometheus/killgate-rules.yml"
DASHBOARD = ROOT / "deploy/grafana/killgate.json"
_NAME = re.compile(r"\b(killgate[_:][A-Za-z0-9_:]*)")
_LABELS = {"killgate_action"}  # a label, not a series


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} is not on PATH (apt-get install -y prometheus prometheus-alertmanager)")
    return exe


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_promtool_accepts_the_rules() -> None:
    res = _run(_tool("promtool"), "check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    """The canary alert fires for a canary worse than its stable (and only then), with the
    labels Alertmanager's webhook maps to a kill."""
    res = _run(_tool("promtool"), "test", "rules",
               str(ROOT / "deploy/prometheus/killgate-rules.test.yml"))
    assert res.returncode == 0, res.stdout + res.stderr


def test_amtool_accepts_the_receiver_config() -> None:
    res = _run(_tool("amtool"), "check-config", str(ROOT / "deploy/alertmanager/alertmanager.yml"))
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("labels", [
    ("alertname=KillgateCanaryErrorRate", "killgate_action=kill", "route=iris", "version=v2",
     "severity=page"),
    ("alertname=KillgateCanaryLatency", "killgate_action=rollback", "route=iris",
     "version=v2", "severity=page"),
])
def test_an_acting_alert_reaches_killgate_and_still_pages(labels: tuple[str, ...]) -> None:
    """`continue: true` on killgate's route only goes on to sibling routes after it: with
    none, the root's receiver (the pager) never saw an alert that killgate acted on."""
    res = _run(_tool("amtool"), "config", "routes", "test", "--config.file",
               str(ROOT / "deploy/alertmanager/alertmanager.yml"), *labels)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.split()[-1].split(",") == ["killgate", "default"], res.stdout


def _recorded() -> set[str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}


def _exported(name: str) -> bool:
    """A series /metrics exposes: a described family, a counter's `_total`, or a
    histogram's `_bucket` / `_sum` / `_count`."""
    if HELP.get(name, ("", ""))[0] in ("counter", "gauge"):
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and HELP.get(name.removesuffix(suffix), ("",))[0] == "histogram":
            return True
    return False


def _exprs(node: Any) -> list[str]:
    """Every PromQL expression in a dashboard (panel targets, variables, annotations)."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "definition") and isinstance(v, str):
                out.append(v)
            elif k == "query" and isinstance(v, dict) and isinstance(v.get("query"), str):
                out.append(v["query"])
            else:
                out.extend(_exprs(v))
    elif isinstance(node, list):
        for v in node:
            out.extend(_exprs(v))
    return out


def test_rules_name_only_exported_series() -> None:
    recorded = _recorded()
    doc = yaml.safe_load(RULES.read_text())
    for g in doc["groups"]:
        for rule in g["rules"]:
            for name in _NAME.findall(rule["expr"]):
                assert _exported(name) or name in recorded, (rule.get("record") or
                                                             rule.get("alert"), name)


def test_dashboard_loads_and_names_only_exported_series() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "killgate" and dash["title"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in panels)
    exprs = _exprs(dash)
    names = {n for e in exprs for n in _NAME.findall(e)} - _LABELS
    recorded = _recorded()
    missing = sorted(n for n in names if not (_exported(n) or n in recorded))
    assert not missing, missing
    # the dashboard shows what issue 11 added: histograms, arms, the split
    for needed in ("killgate_split_share", "killgate_split_expected_share",
                   "killgate_split_drift", "killgate_time_to_first_byte_seconds_bucket",
                   "killgate:request_duration_seconds:p99_1m",
                   "killgate:gateway_overhead_seconds:mean1m", "killgate:failover_share:rate1m"):
        assert needed in names, needed
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))



def _alert_token_commands() -> list[tuple[str, str]]:
    """(where, arguments) of each `killgate token` command the docs give Alertmanager."""
    am = (ROOT / "deploy/alertmanager/alertmanager.yml").read_text()
    comments = "\n".join(line.lstrip("#") for line in am.splitlines() if line.startswith("#"))
    out = []
    for where, text in (("README.md", (ROOT / "README.md").read_text()),
                        ("alertmanager.yml", comments)):
        text = text.replace("\\\n", " ").replace("\n", " ")  # (continued and wrapped lines)
        found = re.findall(r"killgate token ([^>`]*--scope killgate:alert[^>`]*?)\s*>", text)
        assert found, f"{where} shows no `killgate token` command for Alertmanager"
        out += [(where, f) for f in found]
    return out


@pytest.mark.parametrize(("where", "args"), _alert_token_commands(), ids=lambda v: v[:40])
def test_the_documented_alertmanager_token_command_works(where: str, args: str) -> None:
    """The command, run as written against the shipped config (config/killgate.yaml), mints
    a token the gateway accepts: its lifetime within admin.auth.max_token_lifetime."""
    import os
    import shlex
    import sys

    import jwt

    from gateway.configfile import load_config

    cfg_path = ROOT / "config/killgate.yaml"
    auth = load_config(cfg_path).config.admin.auth
    argv = [str(cfg_path) if a == "killgate.yaml" else a for a in shlex.split(args)]
    secret = "s" * 40
    res = subprocess.run([sys.executable, "-m", "gateway", "token", *argv], capture_output=True,
                         text=True, timeout=30, cwd=ROOT,
                         env={**os.environ, auth.secret_env: secret})
    assert res.returncode == 0, (where, res.stderr)
    claims = jwt.decode(res.stdout.strip(), secret, algorithms=["HS256"],
                        audience=auth.audience, issuer=auth.issuer)
    assert claims["scope"] == "killgate:alert" and claims["sub"] == "alertmanager"
    assert claims["exp"] - claims["iat"] <= auth.max_token_lifetime
