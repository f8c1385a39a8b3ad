"""An acting alert that Alertmanager cannot deliver to killgate (deploy review 3).

killgate counts the notifications it refuses (KillgateAlertsRefused), but one that never
reaches it (a wrong URL, DNS, a NetworkPolicy, no killgate-admin pod answering) moves none
of its counters, while the same alert still pages through the route after killgate's and
reads as handled. The shipped KillgateAlertsUndeliverable watches Alertmanager's own
failure counter; this test runs the real Alertmanager with the shipped receiver config
pointed at a port where nothing listens, and checks that the series the rule selects is
the one it really exports (its promtool unit test covers the expression).
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import yaml
from aiohttp import ClientSession
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, free_port, wait_until
from tests.test_alertmanager_e2e import Daemon, _exe, _ready, am_config, daemons  # noqa: F401

RULES = ROOT / "deploy/prometheus/killgate-rules.yml"


def _undeliverable_rule() -> dict[str, Any]:
    doc = yaml.safe_load(RULES.read_text())
    (rule,) = [r for g in doc["groups"] for r in g["rules"]
               if r.get("alert") == "KillgateAlertsUndeliverable"]
    return rule


def _selected(labels: dict[str, str]) -> bool:
    """Whether the rule's selector (integration="webhook", receiver_name=~"killgate|")
    takes a series with these labels; read from the rule so the two cannot drift apart."""
    expr = _undeliverable_rule()["expr"]
    assert 'integration="webhook"' in expr and 'receiver_name=~"killgate|"' in expr, expr
    return (labels.get("integration") == "webhook"
            and labels.get("receiver_name", "") in ("killgate", ""))


async def test_a_notification_alertmanager_cannot_deliver_to_killgate_is_seen(
        tmp_path: Path, daemons: list[Daemon]) -> None:  # noqa: F811
    am_port = free_port()
    am_config(tmp_path / "am.yml", f"http://127.0.0.1:{free_port()}/v1/alerts/alertmanager",
              "not-a-token")  # (nothing listens there: every delivery fails)
    am = Daemon([_exe("alertmanager", "prometheus-alertmanager"),
                 f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am'}",
                 f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
                 "--log.level=warn"], tmp_path / "alertmanager.log")
    daemons.append(am)
    base = f"http://127.0.0.1:{am_port}"
    async with ClientSession() as session:
        await _ready(session, base + "/-/ready", "alertmanager", am)
        alert = [{"labels": {"alertname": "KillgateCanaryErrorRate", "killgate_action": "kill",
                             "route": "iris", "version": "v2", "severity": "page"},
                  "annotations": {"summary": "canary v2 of route iris answers 5xx"}}]
        async with session.post(base + "/api/v2/alerts", json=alert) as r:
            assert r.status == 200, await r.text()

        failed: list[dict[str, Any]] = []

        def counted() -> bool:
            with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
                text = r.read().decode()
            failed[:] = [{"labels": s.labels, "value": s.value}
                         for fam in text_string_to_metric_families(text)
                         if fam.name == "alertmanager_notifications_failed"
                         for s in fam.samples if s.name.endswith("_total") and s.value > 0]
            return bool(failed)

        await wait_until(counted, 60, 0.5,
                         what=f"Alertmanager counting the failed delivery\n{am.output()}")
    assert any(_selected(f["labels"]) for f in failed), failed
    assert not any(f["labels"].get("integration") != "webhook" for f in failed), failed
