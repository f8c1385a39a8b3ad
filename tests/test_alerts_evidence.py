"""What an alert leaves in the audit trail (control/alerts.py): its evidence, without the
secrets its URLs and annotations may carry."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import running_gateway
from tests.test_alerting import payload
from tests.test_alerts import _audit, _gateway_cfg, _post


async def test_the_alerts_evidence_keeps_no_secret_of_its_urls(
        tmp_path: Path, backends, session) -> None:
    """Before: a Prometheus or Alertmanager whose external URL carries a user and password,
    or a runbook annotation with a ?token=, had them stored in the audit event (served by
    GET /v1/audit to every killgate:read token, mirrored, sent with the outgoing events)."""
    cfg = await _gateway_cfg(tmp_path, backends)
    body = payload(killgate_action="kill", route="iris", version="v2")
    body["externalURL"] = "http://amuser:AMSECRET@am.example:9093"
    alert = body["alerts"][0]
    alert["generatorURL"] = ("http://promuser:PROMSECRET@prom.example:9090/graph?g0.expr=up"
                             "&token=TOKSECRET")
    alert["annotations"] = {"summary": "v2 fails, see https://u:SUMSECRET@wiki.example/v2",
                            "runbook": "https://wiki.example/run?access_token=RUNSECRET"}
    async with running_gateway(cfg) as g:
        status, answer = await _post(session, g.admin, body)
        assert status == 200 and answer["actions"][0]["outcome"] == "acted", answer
        (ev,) = [e for e in await _audit(session, g.admin) if e["action"] == "kill"]
        assert "SECRET" not in json.dumps(ev), ev
        evidence = ev["evidence"]
        assert evidence["externalURL"] == "http://***@am.example:9093"
        assert evidence["alert"]["generatorURL"].startswith("http://***@prom.example:9090/graph")
        assert evidence["alert"]["labels"]["version"] == "v2"
        assert ev["reason"].startswith("alert KillgateCanaryErrorRate firing: v2 fails")
