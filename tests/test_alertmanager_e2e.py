"""End to end with real servers: Prometheus scrapes two `killgate serve` instances every
second, the shipped alerting rule fires when the canary fails more than the stable, the
real Alertmanager (the shipped receiver config) posts to killgate, and the canary is
killed on both instances; the audit trail names the alert, and the `resolved` that
follows leaves the kill in place. Prints the time from the canary going bad to the kill
being enforced everywhere.

The rules and the Alertmanager config are the shipped files, with shorter windows and
waits (rates over 5 s, `for: 1s`, scrapes and evaluation every 500 ms) so the test takes
seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import ClientSession, web
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import echo_app
from tests.conftest import (
    ROOT,
    RedisServer,
    admin_token,
    bearer,
    die_with_parent,
    free_port,
    wait_until,
    write_config,
)

INFER = "/v2/models/iris/infer"
READ = bearer("killgate:read", "test", 10800)


def _exe(*names: str) -> str:
    for n in names:
        found = shutil.which(n)
        if found:
            return found
    pytest.fail(f"{names[0]} is not on PATH (apt-get install -y prometheus prometheus-alertmanager)")


class Daemon:
    """A server process of the test's own, on loopback; stopped by the test."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._f = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._f, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=die_with_parent)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._f.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in reversed(started):
        d.stop()


def fast_rules(dst: Path) -> None:
    """The shipped rules with 5 s rate windows (the canary alert's 6 and 15 minutes: 10 and
    20 s), `for: 1s` and evaluation every 500 ms (ten scrapes in the shortest window)."""
    doc = yaml.safe_load((ROOT / "deploy/prometheus/killgate-rules.yml").read_text())
    for group in doc["groups"]:
        group["interval"] = "500ms"
        for rule in group["rules"]:
            # (the canary alert's longer windows for a canary ejected again and again:
            # shortened too, so it resolves within the test once the canary is killed)
            for window, short in (("[1m]", "[5s]"), ("[6m]", "[10s]"), ("[15m]", "[20s]")):
                rule["expr"] = rule["expr"].replace(window, short)
            if "for" in rule:
                rule["for"] = "1s"
    dst.write_text(yaml.safe_dump(doc))


def am_config(dst: Path, url: str, token: str) -> None:
    """The shipped Alertmanager config, pointed at `url`, with the token inline and waits
    of a second."""
    doc = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    doc["route"].update(group_wait="1s", group_interval="1s")
    for r in doc["route"]["routes"]:
        r.update(group_wait="0s", group_interval="1s")
    (hook,) = next(r for r in doc["receivers"] if r["name"] == "killgate")["webhook_configs"]
    hook["url"] = url
    hook["http_config"]["authorization"] = {"type": "Bearer", "credentials": token}
    dst.write_text(yaml.safe_dump(doc))


def flaky_app(state: dict[str, bool]) -> web.Application:
    async def handler(req: web.Request) -> web.Response:
        await req.read()
        if state["bad"]:
            return web.json_response({"error": "model crashed"}, status=500)
        return web.json_response({"version": "v2"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def _ready(session: ClientSession, url: str, what: str, daemon: Daemon) -> None:
    async def ok() -> bool:
        assert daemon.proc.poll() is None, f"{what} exited:\n{daemon.output()}"
        try:
            async with session.get(url) as r:
                return r.status == 200
        except OSError:
            return False

    await wait_until(ok, 30, 0.1, what=f"{what} ready")


async def _kills(session: ClientSession, admin: str) -> list[str]:
    async with session.get(admin + "/v1/status", headers=READ) as r:
        return sorted(f"{k['scope']}:{k['route']}:{k['version']}" for k in (await r.json())["kills"])


@pytest.mark.timeout(120)
async def test_prometheus_alert_kills_the_canary_through_alertmanager(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs, daemons,
        session) -> None:
    prometheus = _exe("prometheus")
    alertmanager = _exe("prometheus-alertmanager", "alertmanager")
    state = {"bad": False}
    p1, p2 = await backends(echo_app("v1")), await backends(flaky_app(state))
    routes = f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 70}}
            - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 30}}
        """
    gws = []
    for name in ("a", "b"):
        st = (f"state:\n  backend: redis\n  url: {redis_server.url}\n  prefix: kge2e\n"
              f"  signing_key_env: KILLGATE_TEST_STATE_KEY\n"
              f"  snapshot_path: {tmp_path}/snap-{name}.json\n  poll_interval: 100ms\n"
              f"  heartbeat_interval: 200ms\n  instance_lease: 2s\n")
        cfg = write_config(tmp_path, routes, state=st, listen=f"127.0.0.1:{free_port()}",
                           admin=f"127.0.0.1:{free_port()}", name=f"{name}.yaml",
                           extra="alerts:\n  alertmanager: {}\nlog: {level: warning}\n")
        gws.append(gateway_procs(cfg))
    for g in gws:
        await asyncio.to_thread(g.wait_ready)

    am_port, prom_port = free_port(), free_port()
    token = admin_token("killgate:alert", "alertmanager", 3600)
    am_config(tmp_path / "am.yml", f"{gws[0].admin}/v1/alerts/alertmanager", token)
    fast_rules(tmp_path / "rules.yml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "500ms", "evaluation_interval": "500ms"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [
            {"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": "killgate", "static_configs": [
            {"targets": [g.admin.removeprefix("http://") for g in gws]}]}],
    }))
    am = Daemon([alertmanager, f"--config.file={tmp_path / 'am.yml'}",
                 f"--storage.path={tmp_path / 'am-data'}",
                 f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
                 "--log.level=warn"], tmp_path / "alertmanager.log")
    daemons.append(am)
    prom = Daemon([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                   f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                   f"--web.listen-address=127.0.0.1:{prom_port}",
                   f"--web.external-url=http://127.0.0.1:{prom_port}/", "--log.level=warn"],
                  tmp_path / "prometheus.log")
    daemons.append(prom)
    await _ready(session, f"http://127.0.0.1:{am_port}/-/ready", "alertmanager", am)
    await _ready(session, f"http://127.0.0.1:{prom_port}/-/ready", "prometheus", prom)

    answers: list[tuple[float, str, int]] = []

    async def load() -> None:  # ~50 requests a second, both instances
        i = 0
        while True:
            g = gws[i % 2]
            i += 1
            with contextlib.suppress(OSError):
                async with session.post(g.url + INFER, json={"i": i}) as r:
                    await r.read()
                    answers.append((time.monotonic(), r.headers.get("x-killgate-version", ""),
                                    r.status))
            await asyncio.sleep(0.02)

    loader = asyncio.create_task(load())
    try:
        # both targets are up and the stable arm is being recorded
        async def scraped() -> bool:
            async with session.get(f"http://127.0.0.1:{prom_port}/api/v1/query", params={
                    "query": 'count(killgate:requests:rate1m{arm="stable"}) and '
                             'count(up{job="killgate"} == 1) == 2'}) as r:
                return bool((await r.json())["data"]["result"])

        await wait_until(scraped, 30, 0.2, what="prometheus scraping both instances")
        await asyncio.sleep(0)  # (healthy traffic keeps flowing meanwhile)

        state["bad"] = True
        t_bad = time.monotonic()

        async def killed_everywhere() -> bool:
            return [await _kills(session, g.admin) for g in gws] == [["version:iris:v2"]] * 2

        await wait_until(killed_everywhere, 60, 0.05,
                         what=f"the alert's kill on both instances\nprometheus:\n"
                              f"{prom.output()}\nalertmanager:\n{am.output()}")
        took = time.monotonic() - t_bad
        print(f"\ncanary bad -> kill enforced on both instances: {took:.1f} s "
              "(scrape 0.5 s, rate over 5 s, for 1 s, evaluation 0.5 s, group_wait 0 s)")
        # no answer from v2 on either instance once the kill is in force
        t_enforced = time.monotonic()
        await wait_until(lambda: any(t > t_enforced + 0.5 for t, _, _ in answers), 10)
        assert not [a for a in answers if a[0] > t_enforced and a[1] == "v2"]
        for g in gws:
            for _ in range(10):
                async with session.post(g.url + INFER, json={}) as r:
                    assert r.status == 200 and r.headers["x-killgate-version"] == "v1"

        # the audit trail names the alert
        async with session.get(gws[1].admin + "/v1/audit?limit=100", headers=READ) as r:
            events = (await r.json())["events"]
        (ev,) = [e for e in events if e["action"] == "kill"]
        assert ev["actor"] == "alertmanager/killgate"
        assert ev["target"] == {"scope": "version", "route": "iris", "version": "v2"}
        alert: dict[str, Any] = ev["evidence"]["alert"]
        assert alert["labels"]["alertname"] == "KillgateCanaryErrorRate"
        assert alert["labels"]["killgate_action"] == "kill"
        assert alert["generatorURL"].startswith(f"http://127.0.0.1:{prom_port}/")
        assert "canary v2 of route iris: its share of 5xx answers is" in ev["reason"]

        # the canary gets no traffic, so the alert resolves; the `resolved` changes nothing
        async def resolved_received() -> bool:
            async with session.get(gws[0].admin + "/metrics") as r:
                text = await r.text()
            for fam in text_string_to_metric_families(text):
                if fam.name == "killgate_alertmanager_alerts":
                    return any(s.labels.get("outcome") == "resolved" and s.value >= 1
                               for s in fam.samples)
            return False

        await wait_until(resolved_received, 45, 0.2, what="the resolved notification")
        for g in gws:
            assert await _kills(session, g.admin) == ["version:iris:v2"]
        async with session.get(gws[0].admin + "/v1/audit?limit=100", headers=READ) as r:
            kills = [e for e in (await r.json())["events"] if e["action"] in ("kill", "unkill")]
        assert len(kills) == 1
    finally:
        loader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loader
    for g in gws:
        assert g.stop() == 0, g.output()
