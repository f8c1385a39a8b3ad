"""The Kubernetes manifests and the dashboard, read as an SRE applying them (deploy review).

Static checks of deploy/kubernetes and deploy/grafana that tests/test_kubernetes.py and
tests/test_deploy_monitoring.py do not make: probe thresholds that cannot flap a loaded
fleet out of its Service, and a dashboard that shows what the alerts watch.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from gateway.telemetry.metrics import kind_of
from tests.test_deploy_monitoring import _NAME, DASHBOARD, RULES, _exprs
from tests.test_kubernetes import _container, _one


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
