"""The canary verdicts of the shipped rules (deploy/prometheus/killgate-rules.yml) judge a
version on the answers the split gave it, never on answers a client pinned.

`x-killgate-pin` is the client's choice: counted in the canary's error ratio, any client of
the data plane could have a healthy canary killed through Alertmanager (pinning requests its
model answers 500), or hide a failing one (pinning requests it answers). Here a real gateway
answers real requests, and real promtool evaluates the real rules on the series that gateway
exported (each counter as a steady per-minute rate of what it counted)."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import yaml
from aiohttp import ClientSession, web

from tests.conftest import ROOT, running_gateway, two_versions, write_config
from tests.test_deploy_monitoring import _tool

RULES = ROOT / "deploy/prometheus/killgate-rules.yml"
INFER = "/v2/models/iris/infer"
_SAMPLE = re.compile(r'^(killgate_requests_total\{[^}]*\}) ([0-9.e+]+)$', re.M)


def _model(name: str, broken: bool = False) -> web.Application:
    """A model server that answers 500 to a malformed input (here: marked by a header);
    `broken`, to every request but a prober's cheap one."""

    async def infer(req: web.Request) -> web.Response:
        await req.read()
        if req.headers.get("x-test-malformed") or (broken and not req.headers.get("x-test-probe")):
            return web.json_response({"error": "bad tensor"}, status=500)
        return web.json_response({"version": name})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", infer)
    return app


async def _series(tmp_path: Path, backends, requests: list[dict[str, str]],
                  broken: bool = False) -> dict[str, float]:
    """killgate_requests_total of a real gateway (stable v1, canary v2 at 50 %) that
    answered `requests` (their headers), one after the other."""
    p1, p2 = await backends(_model("v1")), await backends(_model("v2", broken))
    cfg = write_config(tmp_path, two_versions(p1, p2, 50, 50, "allow_pin: true\noutlier: {enabled: false}\n"))
    async with running_gateway(cfg) as g, ClientSession() as s:
        for headers in requests:
            async with s.post(g.url + INFER, json={"inputs": []}, headers=headers) as r:
                await r.read()
        async with s.get(g.admin + "/metrics") as r:
            text = await r.text()
    return {k: float(v) for k, v in _SAMPLE.findall(text)}


def _verdict(tmp_path: Path, series: dict[str, float]) -> tuple[list[float], list[str]]:
    """(the canary's killgate:arm_error_ratio:rate1m, the versions KillgateCanaryErrorRate
    fires for) at 8 minutes, each counter growing by what the gateway counted a second."""
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES.read_text())
    test = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": name, "values": f"0+{n * 60:g}x15"}
                         for name, n in series.items()],
        "promql_expr_test": [{"expr": 'killgate:arm_error_ratio:rate1m{arm="canary"}',
                              "eval_time": "8m", "exp_samples": []}],
        "alert_rule_test": [{"eval_time": "8m", "alertname": "KillgateCanaryErrorRate",
                             "exp_alerts": []}]}]}
    path = tmp_path / "probe.test.yml"
    path.write_text(yaml.safe_dump(test))
    res = subprocess.run([_tool("promtool"), "test", "rules", str(path)], capture_output=True,
                         text=True, timeout=60)
    out = res.stdout + res.stderr
    ratios = [float(v) for v in re.findall(
        r'killgate:arm_error_ratio:rate1m", arm="canary"[^}]*\} ([0-9.E+-]+)', out)]
    fired = re.findall(r'alertname="KillgateCanaryErrorRate"[^}]*version="([^"]+)"', out)
    return ratios, fired


async def test_a_client_pinning_requests_the_canary_fails_does_not_get_it_killed(
        tmp_path: Path, backends) -> None:
    # the split's traffic: the canary answers it all; a client pins 20 requests the
    # canary's model refuses
    series = await _series(tmp_path, backends, [{}] * 40 + [
        {"x-killgate-pin": "v2", "x-test-malformed": "1"}] * 20)
    pinned = [k for k in series if 'decision="pinned"' in k]
    assert pinned and all('arm="canary"' in k and 'code="500"' in k for k in pinned), series
    ratios, fired = await asyncio.to_thread(_verdict, tmp_path, series)
    assert ratios == [0.0] and fired == [], (ratios, fired)


async def test_a_failing_canary_is_killed_whatever_a_client_pins_to_it(
        tmp_path: Path, backends) -> None:
    # the canary fails every request of the split's; a prober pins 200 cheap ones it answers
    series = await _series(tmp_path, backends, [{}] * 40 + [
        {"x-killgate-pin": "v2", "x-test-probe": "1"}] * 200, broken=True)
    assert any('decision="weighted"' in k and 'version="v2"' in k and 'code="500"' in k
               for k in series), series
    ratios, fired = await asyncio.to_thread(_verdict, tmp_path, series)
    assert ratios == [1.0] and fired == ["v2"], (ratios, fired)
