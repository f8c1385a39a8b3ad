"""The Kubernetes manifests and the dashboard, read as an SRE applying them (deploy review).

Static checks of deploy/kubernetes and deploy/grafana that tests/test_kubernetes.py and
tests/test_deploy_monitoring.py do not make: probe thresholds that cannot flap a loaded
fleet out of its Service, and a dashboard that shows what the alerts watch.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.telemetry.metrics import kind_of
from tests.conftest import ROOT
from tests.test_deploy_monitoring import _NAME, DASHBOARD, RULES, _exprs
from tests.test_kubernetes import BASE, OVERLAY, _config_of, _container, _one


def _gateway() -> tuple[dict[str, Any], dict[str, Any]]:
    dep = _one("Deployment")
    return dep["spec"]["template"]["spec"], _container(dep)


def test_one_slow_readiness_probe_never_takes_a_pod_out() -> None:
    """/readyz answers on the event loop the data plane runs on: at a traffic peak a probe
    can miss its timeout. With `failureThreshold: 1` one late answer took the pod out of the
    Service, moving its load onto the others, whose probes then missed in turn. Readiness
    must need several misses in a row, and still see a pod that stopped answering within
    the preStop delay."""
    _, c = _gateway()
    ready = c["readinessProbe"]
    assert ready["failureThreshold"] >= 3, ready
    assert ready["timeoutSeconds"] >= 2, ready
    window = ready["periodSeconds"] * ready["failureThreshold"]
    assert window <= c["lifecycle"]["preStop"]["sleep"]["seconds"], window
    # liveness is slower still than readiness: a busy pod is taken out before restarted
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > window
    assert live["timeoutSeconds"] >= ready["timeoutSeconds"]


@pytest.mark.parametrize("folder", [BASE, OVERLAY], ids=["base", "overlay"])
def test_the_startup_probe_outlasts_the_start_s_wait_for_redis(folder: Path) -> None:
    """The admin port (the startup probe's) opens after start-up, which waits up to
    `state.start_timeout` for Redis: a probe window shorter than that restarts a pod that
    was about to start on its snapshot, over and over while Redis is slow."""
    dep = _one("Deployment")  # (the overlay patches its image and replicas only)
    probe = _container(dep)["startupProbe"]
    window = probe["periodSeconds"] * probe["failureThreshold"]
    cfg = _config_of(_one("ConfigMap", folder))
    assert window >= cfg.state.start_timeout + 10, (window, cfg.state.start_timeout)


def test_the_dashboard_shows_every_gauge_an_alert_watches() -> None:
    """An alert that pages about a gauge sends the on-call to the dashboard: the series must
    be there. `killgate_kills_unrouted` and `killgate_overrides_unservable` got alerts and no
    panel (nor `killgate_audit_mirror_ok` and `killgate_drills_overdue`)."""
    doc = yaml.safe_load(RULES.read_text())
    watched = {n for g in doc["groups"] for r in g["rules"] if "alert" in r
               for n in _NAME.findall(r["expr"])
               if n.startswith("killgate_") and kind_of(n)[0] == "gauge"}
    watched -= {"killgate_split_window_answers"}  # a guard of the drift alert (enough answers)
    assert {"killgate_kills_unrouted", "killgate_overrides_unservable"} <= watched
    shown = {n for e in _exprs(json.loads(DASHBOARD.read_text())) for n in _NAME.findall(e)}
    assert not watched - shown, sorted(watched - shown)


def _targets() -> list[tuple[int, dict[str, Any]]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["id"], t) for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_series_of_several_routes_are_never_merged() -> None:
    """The route variable selects several routes (All by default), and routes share version
    names (the example overlay's iris and iris-drill both have v1 and v2): a panel that
    aggregated `by (version)` added iris's answers to the drill route's, averaged their
    shares and took one quantile over both; legends without the route showed two lines
    of the same name. Every aggregation keeps `route`, every legend names it."""
    for panel, t in _targets():
        if "$route" not in t["expr"]:
            continue
        for group in re.findall(r"\bby \(([^)]*)\)", t["expr"]):
            assert "route" in [g.strip() for g in group.split(",")], (panel, t["expr"])
        assert "{{route}}" in t["legendFormat"], (panel, t["legendFormat"])


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each query, with the dashboard's variables filled in, as a recording rule that
    `promtool check rules` must accept (a typo in PromQL shows only as an empty panel)."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not on PATH (apt-get install -y prometheus)")
    rules = [{"record": f"dashboard:panel{panel}:{t['refId']}",
              "expr": t["expr"].replace("$__rate_interval", "1m").replace("$route", ".+")}
             for panel, t in _targets()]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def _container_run_command() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Container image"):]
    m = re.search(r"^podman run (.*?) killgate$", section.replace("\\\n", " "), re.M)
    assert m, "README 'Container image' shows no `podman run ... killgate` command"
    return shlex.split(m.group(1))


def test_the_documented_container_run_writes_only_where_it_can() -> None:
    """README "Container image" ran the image with `--read-only`, a tmpfs on
    /var/lib/killgate, and config/minimal.yaml mounted at /etc/killgate/config.yaml. That
    config names no state paths, and the defaults are relative to the config's folder:
    /etc/killgate/var/killgate-store.json on the read-only root, so the instance could not
    open its store and exited with a traceback. The documented config must name every file
    killgate writes under a writable mount, and listen where `-p` publishes."""
    from gateway.configfile import load_config

    args = _container_run_command()
    writable = ["/tmp"]  # (podman --read-only mounts a tmpfs there; docker: --tmpfs /tmp)
    mounts: dict[str, str] = {}
    published: set[int] = set()
    for flag, value in itertools.pairwise(args):
        if flag == "--tmpfs":
            writable.append(value.split(":", 1)[0])
        elif flag == "-v":
            host, inside = value.split(":")[:2]
            mounts[inside] = host.replace("$PWD", str(ROOT))
        elif flag == "-p":
            published.add(int(value.rsplit(":", 1)[1]))
    assert "--read-only" in args
    inside = "/etc/killgate/config.yaml"
    cfg = load_config(Path(mounts[inside])).config
    folder = Path(inside).parent

    def where(p: str) -> Path:
        return Path(p) if Path(p).is_absolute() else folder / p

    files = [cfg.state.snapshot_path, *([cfg.state.path] if cfg.state.backend == "local" else []),
             *([cfg.state.audit_mirror] if cfg.state.audit_mirror else [])]
    for f in files:
        assert any(where(f).is_relative_to(w) for w in writable), (f, where(f), writable)
    for listen in (cfg.listen, cfg.admin.listen):
        host, port = listen.rsplit(":", 1)
        if int(port) in published:
            assert host in ("0.0.0.0", "[::]", "::"), listen  # the container's loopback


@pytest.mark.parametrize("folder", [BASE, OVERLAY], ids=["base", "overlay"])
def test_the_drill_cronjob_drills_a_drill_route_of_the_config(folder: Path) -> None:
    """The base's CronJob drilled `iris-drill` every week, and the base's config had no such
    route: a deployment of the base (or an overlay built on it that keeps its config) failed
    its drill every Tuesday. The route and version the drill names exist in each config,
    the route a drill route (`drill_for`: never one users are served by)."""
    spec = _one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    script = " ".join(spec["containers"][0]["args"])
    m = re.search(r"killgate drill kill --route (\S+) --version (\S+)", script)
    assert m, script
    cfg = _config_of(_one("ConfigMap", folder))
    routes = {r.name: r for r in cfg.routes}
    assert m.group(1) in routes, (m.group(1), sorted(routes))
    route = routes[m.group(1)]
    assert route.drill_for in routes, route.drill_for
    assert m.group(2) in {v.name for v in route.versions}


def test_a_hard_spread_counts_only_nodes_the_pod_may_run_on() -> None:
    """The spread over nodes is hard (DoNotSchedule, maxSkew 1) and counted every node,
    tainted ones included (nodeTaintsPolicy defaults to Ignore): a tainted GPU node, a
    control-plane node or a node cordoned for a drain counts as holding 0 gateway pods, so
    as soon as each schedulable node held one, a further pod exceeded the skew everywhere
    and stayed Pending (the HPA capped at the number of untainted nodes; a drained pod's
    replacement and a rollout's surge pod stuck). Hard constraints must honour taints."""
    pod, _ = _gateway()
    hard = [t for t in pod["topologySpreadConstraints"]
            if t["whenUnsatisfiable"] == "DoNotSchedule"]
    assert hard
    for t in hard:
        assert t.get("nodeTaintsPolicy") == "Honor", t
        assert t.get("nodeAffinityPolicy", "Honor") == "Honor", t


def test_an_unready_pod_never_blocks_a_node_drain() -> None:
    """A pod that never becomes ready (no kill state: Redis unreachable and no snapshot, or
    a Secret changed without the rotation steps) serves nothing, yet under the default
    `unhealthyPodEvictionPolicy` (IfHealthyBudget), once two were unready (the budget
    broken) not even they could be evicted: the drains of their nodes waited for them to
    become ready (in a Redis outage, new pods without a snapshot never do)."""
    pdb = _one("PodDisruptionBudget")
    assert pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow", pdb["spec"]
