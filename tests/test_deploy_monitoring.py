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
from tests.test_cli import cli

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


def test_a_drill_that_stopped_passing_or_running_is_alerted_on() -> None:
    """README: the drills' last results are exported 'to alert on a drill that stopped
    passing, or stopped running', and the CronJob's comment says a failed drill 'fails the
    Job, which your alerting picks up'; no shipped rule read them (nor a failed Job), so
    the weekly drill failing, or no longer running, told nobody. The rules' own promtool
    cases (killgate-rules.test.yml) check what each fires on."""
    doc = yaml.safe_load(RULES.read_text())
    read = {r["alert"]: set(_NAME.findall(r["expr"])) for g in doc["groups"]
            for r in g["rules"] if "alert" in r}
    assert "killgate_drill_last_passed" in read.get("KillgateDrillNotPassing", set())
    assert "killgate_drill_last_timestamp_seconds" in read.get("KillgateDrillsNotRunning",
                                                               set())


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
    for needed in ("killgate_split_window_answers", "killgate_split_expected_share",
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
    import shlex

    import jwt

    from gateway.configfile import load_config

    cfg_path = ROOT / "config/killgate.yaml"
    auth = load_config(cfg_path).config.admin.auth
    argv = [str(cfg_path) if a == "killgate.yaml" else a for a in shlex.split(args)]
    secret = "s" * 40
    res = cli("token", *argv, env={auth.secret_env: secret})
    assert res.returncode == 0, (where, res.stderr)
    claims = jwt.decode(res.stdout.strip(), secret, algorithms=["HS256"],
                        audience=auth.audience, issuer=auth.issuer)
    assert claims["scope"] == "killgate:alert" and claims["sub"] == "alertmanager"
    assert claims["exp"] - claims["iat"] <= auth.max_token_lifetime


async def test_a_real_prometheus_evaluates_the_rules_on_a_real_gateways_series(
        tmp_path, backends, gateway_procs) -> None:
    """The names being exported is not enough: the rules join and filter on labels (`arm`,
    `code`, `route`, `version`). A real Prometheus scrapes a real `killgate serve` whose
    canary answers 500: every recording rule has series, every rule evaluates without
    error, and the canary alert is pending (its `for` not yet over) on the real data."""
    import asyncio
    import contextlib
    import json as jsonlib
    import urllib.parse
    import urllib.request

    from tests.backends import echo_app
    from tests.conftest import free_port, two_versions, wait_until_sync, write_config

    stable, canary = await backends(echo_app("v1")), await backends(echo_app("v2", status=500))
    cfg = write_config(tmp_path, two_versions(stable, canary, 50, 50,
                                              extra="outlier: {enabled: false}\n"),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg)
    await asyncio.to_thread(gw.wait_ready)
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 500ms, evaluation_interval: 500ms}\n"
        f"rule_files: [{RULES}]\n"
        "scrape_configs:\n  - job_name: killgate\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{gw.admin_port}']}}]\n")
    prom = _prometheus(tmp_path, prom_port)
    api = f"http://127.0.0.1:{prom_port}/api/v1"

    def get(path: str) -> Any:
        with urllib.request.urlopen(api + path, timeout=5) as r:
            return jsonlib.loads(r.read())["data"]

    def query(expr: str) -> list[dict[str, Any]]:
        return list(get("/query?query=" + urllib.parse.quote(expr))["result"])

    def traffic_and(check: Any) -> Any:
        def step() -> Any:
            for _ in range(10):
                with contextlib.suppress(urllib.error.HTTPError):  # (the canary's 500s)
                    urllib.request.urlopen(gw.url + "/v2/models/iris/infer", timeout=5).read()
            try:
                return check()
            except OSError:
                return None  # (Prometheus still starting)
        return step

    try:
        recorded = sorted(_recorded())

        def every_recording_rule_has_series() -> bool:
            return all(query(name) for name in recorded)

        await asyncio.to_thread(wait_until_sync, traffic_and(every_recording_rule_has_series),
                                60.0, 0.2, "every recording rule's series")
        ratios = {(s["metric"]["version"], s["metric"]["arm"]): float(s["value"][1])
                  for s in query("killgate:arm_error_ratio:rate1m")}
        assert ratios == {("v1", "stable"): 0.0, ("v2", "canary"): 1.0}, ratios

        def canary_alert() -> list[dict[str, Any]]:
            return [a for a in get("/alerts")["alerts"]
                    if a["labels"]["alertname"] == "KillgateCanaryErrorRate"]

        await asyncio.to_thread(wait_until_sync, traffic_and(canary_alert), 30.0, 0.2,
                                "the canary alert pending")
        (alert,) = canary_alert()
        assert alert["labels"]["route"] == "iris" and alert["labels"]["version"] == "v2"
        assert alert["labels"]["killgate_action"] == "kill"
        for group in get("/rules")["groups"]:
            for rule in group["rules"]:
                assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        # every dashboard query runs on the real series (a 400 raises); the split panel
        # gives the fleet's actual share per route and version
        def not_found() -> list[dict[str, Any]]:  # a 404 no_route: exported with route=""
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(gw.url + "/nowhere", timeout=5).read()
            return query('killgate_requests_total{code="404"}')

        await asyncio.to_thread(wait_until_sync, not_found, 10.0, 0.2, "the 404's series")
        # the route variable (`label_values(killgate_requests_total, route)`): what Grafana
        # reads holds the routes only; the 404's series, exported with route="", has no
        # route label in Prometheus (an empty label is no label), so no "" in the picker
        assert get("/label/route/values?match[]=killgate_requests_total") == ["iris"]
        for expr in _exprs(json.loads(DASHBOARD.read_text())):
            if expr.startswith("label_values("):
                continue
            query(expr.replace("$__rate_interval", "1m").replace("$route", ".+"))
        share = next(t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"]
                     for t in p.get("targets", []) if t["legendFormat"].startswith("actual "))
        shares = {(s["metric"]["route"], s["metric"]["version"]): float(s["value"][1])
                  for s in query(share.replace("$route", ".+"))}
        assert set(shares) == {("iris", "v1"), ("iris", "v2")}, shares
        assert abs(sum(shares.values()) - 1.0) < 1e-9, shares
    finally:
        _stop(prom)
        gw.stop()


def _prometheus(tmp_path: Any, port: int) -> subprocess.Popen[bytes]:
    from tests.conftest import die_with_parent

    return subprocess.Popen(
        [_tool("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _seconds(duration: str) -> float:
    """A Prometheus/Alertmanager duration (`90s`, `5m`, `1h30m`) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def test_an_acting_alert_not_acted_on_pages_for_as_long_as_it_fires() -> None:
    """KillgateAlertNotActed reads the `unmapped`/`refused` answers of the last 10 minutes.
    Alertmanager sends an unchanged group again only at its repeat_interval, and the
    killgate route inherited the root's 4h: an acting alert killgate did not act on paged
    NotActed once, which resolved 10 minutes later while the acting alert still fired and
    no kill was made (and a config fix letting it act waited up to 4 hours). The killgate
    route's resends come within the rule's window."""
    am = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    route = next(r for r in am["route"]["routes"] if r.get("receiver") == "killgate")
    repeat = _seconds(route.get("repeat_interval", am["route"].get("repeat_interval", "4h")))
    group = _seconds(route.get("group_interval", am["route"].get("group_interval", "5m")))
    rule = next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
                if r.get("alert") == "KillgateAlertNotActed")
    (window,) = re.findall(r"\[(\w+)\]", rule["expr"])
    assert repeat + group < _seconds(window), (repeat, group, window)
    assert "repeat_interval: 5m" in (ROOT / "README.md").read_text()
