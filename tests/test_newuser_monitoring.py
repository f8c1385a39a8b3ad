"""A new SRE wires killgate to a Prometheus and an Alertmanager of their own from the README
alone (revnewuser8): its prometheus.yml and Alertmanager snippets, pasted with only their
addresses changed, scrape a `--workers 2` group and a second instance, and the canary alert
kills the canary on both; the Alertmanager snippet groups as the shipped file does; the
PrometheusRule command the Deploying section gives for the Prometheus operator holds the
shipped rules as they are."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from aiohttp import ClientError, ClientSession

from tests.backends import echo_app
from tests.conftest import ROOT, admin_token, free_port, two_versions, wait_until, write_config
from tests.test_alertmanager_e2e import READ, Daemon, _exe, _ready, daemons, fast_rules

__all__ = ["daemons"]  # (the fixture, imported for the tests below)

README = ROOT / "README.md"
RULES = ROOT / "deploy/prometheus/killgate-rules.yml"


def _yaml_block(marker: str) -> str:
    """The README's ```yaml block holding `marker`."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"README shows {len(found)} yaml block(s) holding {marker!r}"
    return found[0]


def _prometheus_snippet() -> str:
    return _yaml_block("# prometheus.yml")


def _alertmanager_snippet() -> str:
    return _yaml_block("/v1/alerts/alertmanager")


def test_the_readmes_alertmanager_snippet_groups_as_the_shipped_file() -> None:
    """Its text says the route groups by alertname, job, namespace, route and version (so a
    notification holds few alerts, well within `max_alerts: 20`); pasted without the root's
    `group_by` (main), Alertmanager put every acting alert of every fleet in one group."""
    snippet = yaml.safe_load(_alertmanager_snippet())
    shipped = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    assert snippet["route"].get("group_by") == shipped["route"]["group_by"]
    res = subprocess.run([_exe("amtool"), "check-config", "/dev/stdin"], input=_alertmanager_snippet(),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.timeout(150)
async def test_the_readmes_monitoring_snippets_kill_a_failing_canary_as_pasted(
        tmp_path: Path, backends, gateway_procs, daemons: list[Daemon],
        session: ClientSession) -> None:
    prometheus = _exe("prometheus")
    alertmanager = _exe("prometheus-alertmanager", "alertmanager")
    stable, canary = await backends(echo_app("v1")), await backends(echo_app("v2", status=500))
    routes = two_versions(stable, canary, 70, 30, extra="outlier: {enabled: false}\n")
    # a `--workers 2` group and a single instance, sharing the local store (one host)
    gws = [gateway_procs(write_config(tmp_path, routes, name=f"{n}.yaml",
                                      listen=f"127.0.0.1:{free_port()}",
                                      admin=f"127.0.0.1:{free_port()}",
                                      extra="alerts: {alertmanager: {mode: act}}\n"), workers=w)
           for n, w in (("a", 2), ("b", 1))]
    for g in gws:
        await asyncio.to_thread(g.wait_ready)

    am_port, prom_port = free_port(), free_port()
    fast_rules(tmp_path / "rules.yml")  # (the shipped rules with seconds for minutes)
    prom = _prometheus_snippet()
    for old, new in (("/etc/prometheus/killgate-rules.yml", str(tmp_path / "rules.yml")),
                     # (the rules' windows are seconds here: scrapes to match)
                     ("scrape_interval: 15s, evaluation_interval: 15s",
                      "scrape_interval: 500ms, evaluation_interval: 500ms"),
                     ("10.0.0.5:8081", f"127.0.0.1:{gws[0].admin_port}"),
                     ("10.0.0.6:8081", f"127.0.0.1:{gws[1].admin_port}"),
                     ("127.0.0.1:9093", f"127.0.0.1:{am_port}")):
        assert old in prom, f"the README's prometheus.yml has no {old}"
        prom = prom.replace(old, new)
    (tmp_path / "prometheus.yml").write_text(prom)
    check = await asyncio.to_thread(
        subprocess.run, [_exe("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    (tmp_path / "killgate.token").write_text(admin_token("killgate:alert", "alertmanager", 3600))
    am = _alertmanager_snippet()
    for old, new in (("http://killgate-admin:8081", gws[0].admin),
                     ("/etc/alertmanager/killgate.token", str(tmp_path / "killgate.token"))):
        assert old in am, f"the README's Alertmanager config has no {old}"
        am = am.replace(old, new)
    (tmp_path / "am.yml").write_text(am)

    daemons.append(Daemon([alertmanager, f"--config.file={tmp_path / 'am.yml'}",
                           f"--storage.path={tmp_path / 'am-data'}",
                           f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
                           "--log.level=warn"], tmp_path / "alertmanager.log"))
    daemons.append(Daemon([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                           f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                           f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                          tmp_path / "prometheus.log"))
    await _ready(session, f"http://127.0.0.1:{am_port}/-/ready", "alertmanager", daemons[0])
    await _ready(session, f"http://127.0.0.1:{prom_port}/-/ready", "prometheus", daemons[1])

    async def killed_everywhere() -> bool:
        for g in gws:  # traffic through both instances, the canary answering 500
            for _ in range(5):
                try:
                    async with session.post(g.url + "/v2/models/iris/infer", data=b"{}") as r:
                        await r.read()
                except ClientError:
                    pass
        kills = []
        for g in gws:
            async with session.get(g.admin + "/v1/status", headers=READ) as r:
                kills.append(sorted(f"{k['scope']}:{k['route']}:{k['version']}"
                                    for k in (await r.json())["kills"]))
        return kills == [["version:iris:v2"]] * 2

    await wait_until(killed_everywhere, 90, 0.2, what="the canary killed on both instances")
    api = f"http://127.0.0.1:{prom_port}/api/v1"
    async with session.get(api + "/targets") as r:
        targets = {(t["labels"]["job"], t["health"]) for t in (await r.json())["data"]["activeTargets"]}
    assert targets == {("killgate", "up"), ("alertmanager", "up")}, targets
    async with session.get(f"http://127.0.0.1:{am_port}/api/v2/alerts/groups") as r:
        groups = [gr["labels"] for gr in await r.json() if gr["receiver"]["name"] == "killgate"]
    assert {"route": "iris", "version": "v2"}.items() <= groups[0].items(), groups
    async with session.get(api + "/alerts") as r:  # (scraped often enough for the rules)
        names = {a["labels"]["alertname"] for a in (await r.json())["data"]["alerts"]}
    assert "KillgateScrapedTooSeldom" not in names, names


def test_the_prometheusrule_command_holds_the_shipped_rules() -> None:
    """With the Prometheus operator, which reads neither `rule_files` nor the pods'
    annotations, the Deploying section's command makes the PrometheusRule: its `spec` is the
    rule file as it is (main said nothing: no rule loaded, no acting alert, and no
    KillgateNotScraped to say so)."""
    m = re.search(r"`(yq '[^`]*PrometheusRule[^`]*) > prometheusrule\.yaml`", README.read_text())
    assert m, "README gives no command making a PrometheusRule of the shipped rules"
    if shutil.which("yq") is None:
        pytest.skip("yq is not installed (apt-get install -y yq): the command not run")
    res = subprocess.run(m.group(1), shell=True, capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr
    doc = yaml.safe_load(res.stdout)  # (python-yq writes JSON, which is YAML too)
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    assert doc["metadata"]["labels"] == {"release": "kube-prometheus-stack"}
    assert doc["spec"] == yaml.safe_load(RULES.read_text())


@pytest.mark.timeout(60)
async def test_metrics_say_which_killgate_version_each_instance_runs(
        tmp_path: Path, backends, gateway_procs, session: ClientSession) -> None:
    """Upgrading says to unkill again, and that the replica rule protects kills, "once every
    instance runs the new version": `killgate_build_info{killgate_version}` lets Prometheus say which
    instances run which (`count by (killgate_version) (killgate_build_info)`); on main nothing did
    (not /metrics, /v1/status, /v1/fleet nor /healthz), so an SRE could not tell."""
    from prometheus_client.parser import text_string_to_metric_families

    from gateway import __version__
    from gateway.buildid import build_id

    stable, canary = await backends(echo_app("v1")), await backends(echo_app("v2"))
    routes = two_versions(stable, canary)
    gws = [gateway_procs(write_config(tmp_path, routes, name=f"{n}.yaml",
                                      listen=f"127.0.0.1:{free_port()}",
                                      admin=f"127.0.0.1:{free_port()}"), workers=w)
           for n, w in (("a", 2), ("b", 1))]
    for g in gws:
        await asyncio.to_thread(g.wait_ready)
        async with session.get(g.admin + "/metrics") as r:
            text = await r.text()
        infos = [(s.labels, s.value) for f in text_string_to_metric_families(text)
                 if f.name == "killgate_build_info" for s in f.samples]
        assert infos == [({"killgate_version": __version__, "build": build_id()}, 1.0)], (g.admin, infos)


@pytest.mark.timeout(120)
async def test_a_prometheus_scraping_too_seldom_for_the_rules_windows_is_told(
        tmp_path: Path, backends, gateway_procs, daemons: list[Daemon],
        session: ClientSession) -> None:
    """Prometheus's default `scrape_interval` is 1m and the rules' shortest windows are
    `[1m]`: one sample in a window, no rate, so the 1-minute rules are empty (the canary
    latency alert never fires, so never rolls back) and on main nothing said so. Scaled
    down with real processes: fast_rules's `[5s]` windows, a scrape every 6 s:
    KillgateScrapedTooSeldom fires."""
    stable, canary = await backends(echo_app("v1")), await backends(echo_app("v2", status=500))
    gw = gateway_procs(write_config(
        tmp_path, two_versions(stable, canary, 50, 50, extra="outlier: {enabled: false}\n"),
        listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}"))
    await asyncio.to_thread(gw.wait_ready)
    prom_port = free_port()
    fast_rules(tmp_path / "rules.yml")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 6s, evaluation_interval: 500ms}\n"
        f"rule_files: [{tmp_path / 'rules.yml'}]\n"
        "scrape_configs:\n  - job_name: killgate\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{gw.admin_port}']}}]\n")
    daemons.append(Daemon([_exe("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
                           f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                           f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                          tmp_path / "prometheus.log"))
    await _ready(session, f"http://127.0.0.1:{prom_port}/-/ready", "prometheus", daemons[0])

    async def told() -> bool:
        for _ in range(5):
            async with session.post(gw.url + "/v2/models/iris/infer", data=b"{}") as r:
                await r.read()
        async with session.get(f"http://127.0.0.1:{prom_port}/api/v1/alerts") as r:
            alerts = (await r.json())["data"]["alerts"]
        return any(a["labels"]["alertname"] == "KillgateScrapedTooSeldom"
                   and a["state"] == "firing" for a in alerts)

    await wait_until(told, 60, 0.5, what="KillgateScrapedTooSeldom firing")
