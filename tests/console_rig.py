"""The rig for the console's browser tests: a real fleet and a real Chromium.

`running_fleet`: a redis-server, three model servers (`tests.proc_backend`), two `killgate
serve` processes on one config (free ports read back from their logs) and a thread sending
~16 requests a second through both; `Browser` (tests/chromium.py, named here too): Chromium
under chromedriver; `nginx_proxy`: a real nginx that signs requests in, as an
OIDC-fronting proxy does.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# (Browser named here too: the test modules take it from the rig, with the fleet)
from tests.chromium import Browser as Browser
from tests.conftest import (
    ROOT,
    SECRET,
    STATE_KEY,
    STATE_KEY_ENV,
    GatewayProcess,
    RedisServer,
    die_with_parent,
    free_port,
    wait_until_sync,
    write_config,
)

INFER = "/v2/models/iris/infer"
BODY = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                               "data": [6.1, 2.8, 4.7, 1.2]}]}).encode()


@dataclass
class Fleet:
    gateways: list[GatewayProcess]
    redis: RedisServer
    backends: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    @property
    def admin(self) -> str:
        return self.gateways[0].admin

    def api(self, method: str, path: str, tok: str, gw: int = 0, body: Any = None) -> Any:
        req = urllib.request.Request(self.gateways[gw].admin + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {tok}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def served_by(self, gw: int, n: int, headers: dict[str, str] | None = None) -> set[str]:
        """The versions that answered `n` requests through instance `gw`'s data plane."""
        conn = http.client.HTTPConnection("127.0.0.1", self.gateways[gw].data_port, timeout=5)
        seen = set()
        try:
            for _ in range(n):
                conn.request("POST", INFER, BODY, headers or {})
                r = conn.getresponse()
                r.read()
                assert r.status == 200, r.status
                seen.add(r.headers.get("x-killgate-version", "?"))
        finally:
            conn.close()
        return seen


def start_backends(*versions: str) -> list[tuple[subprocess.Popen[bytes], int]]:
    """A model server (`tests.proc_backend`) per version, each in its own process on a free
    port: all started at once, then each waited for (an interpreter start each, ~0.5 s of
    CPU importing aiohttp: started one after the other, a fleet's three took 3x one's wall
    time on a loaded machine). If one never answers, every one started is killed."""
    started: list[tuple[subprocess.Popen[bytes], int]] = []
    try:
        for version in versions:
            port = free_port()
            started.append((subprocess.Popen(
                [sys.executable, "-m", "tests.proc_backend", str(port), version],
                cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=die_with_parent), port))
        for (proc, port), version in zip(started, versions, strict=True):
            def ready(proc: subprocess.Popen[bytes] = proc, port: int = port) -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"the model server on {port} exited with "
                                         f"{proc.returncode}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready",
                                                timeout=1):
                        return True
                except OSError:
                    return False

            wait_until_sync(ready, 15, what=f"backend {version}")
    except BaseException:
        for proc, _ in started:
            proc.kill()
            proc.wait(5)
        raise
    return started


def start_backend(version: str) -> tuple[subprocess.Popen[bytes], int]:
    (started,) = start_backends(version)
    return started


LISTENING = re.compile(r'phase="listening" data="127.0.0.1:(\d+)" admin="127.0.0.1:(\d+)"')


def learn_ports(g: GatewayProcess) -> None:
    def listening() -> re.Match[str] | None:
        if g.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {g.proc.returncode}:\n{g.output()}")
        return LISTENING.search(g.output())

    m = wait_until_sync(listening, 15, what="the gateway's ports in its log")
    g.data_port, g.admin_port = int(m.group(1)), int(m.group(2))


def fleet_routes(p1: int, p2: int, p3: int) -> str:
    return textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          allow_pin: true
          versions:
            - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 90}}
            - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 10}}
        - name: iris-beta
          match: {{path_prefix: /v2/models/iris, header: {{x-tenant: beta}}}}
          stable: v2
          versions:
            - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 75}}
            - {{name: v3, url: "http://127.0.0.1:{p3}", weight: 25}}
          analysis: {{interval: 1s, window: 20s, min_requests: 10, steps: [25, 50, 100],
                      step_interval: 10m, max_p99_ratio: 1000, p99_slack: 10s}}
        """)


def pump_traffic(fleet: Fleet, stop: threading.Event) -> None:
    """About 16 requests a second through both instances, to both routes."""
    conns = [http.client.HTTPConnection("127.0.0.1", g.data_port, timeout=5)
             for g in fleet.gateways]
    i = 0
    while not stop.wait(0.06):
        i += 1
        conn = conns[i % 2]
        try:
            conn.request("POST", INFER, BODY, {"x-tenant": "beta"} if i % 4 < 2 else {})
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            conn.close()
    for c in conns:
        c.close()


@contextmanager
def running_fleet(tmp: Path, extra: str = "", state_lines: str = "") -> Iterator[Fleet]:
    """Redis, three model servers, two `killgate serve` on one config (plus `extra`, YAML
    sections such as `approvals:`, and `state_lines`, lines of the state section such as
    `  max_staleness: 2s\n`), and the traffic pump; everything stopped on the way out."""
    redis = RedisServer(tmp)
    redis.start()
    fl = Fleet([], redis)
    stop = threading.Event()
    pump: threading.Thread | None = None
    try:
        started = start_backends("v1", "v2", "v3")
        fl.backends.extend(proc for proc, _ in started)
        ports = [port for _, port in started]
        # the same config for both instances, as in a real fleet (one digest): each binds
        # free ports (":0"), read back from its log; a folder each (logs, snapshots)
        state = (f"state:\n  backend: redis\n  url: {redis.url}\n  prefix: kgui\n"
                 f"  signing_key_env: {STATE_KEY_ENV}\n  snapshot_path: snapshot.json\n"
                 "  poll_interval: 100ms\n  heartbeat_interval: 200ms\n  instance_lease: 2s\n"
                 + state_lines)
        for name in ("a", "b"):
            (tmp / name).mkdir()
            cfg = write_config(tmp / name, fleet_routes(*ports), state=state, extra=extra,
                               name="fleet.yaml")
            fl.gateways.append(GatewayProcess(cfg, env={"KILLGATE_TEST_SECRET": SECRET,
                                                        STATE_KEY_ENV: STATE_KEY}))
        for g in fl.gateways:
            learn_ports(g)
            g.wait_ready()
        pump = threading.Thread(target=pump_traffic, args=(fl, stop), daemon=True)
        pump.start()
        yield fl
    finally:
        stop.set()
        if pump is not None:
            pump.join(10)
        for g in fl.gateways:
            g.stop()
        for b in fl.backends:
            b.kill()
            b.wait(5)
        redis.kill()


@contextmanager
def behind_proxy(b: Browser, fleet: Fleet, tmp: Path, tok: str, locations: str = "",
                 clear: bool = False) -> Iterator[str]:
    """The page's URL through `nginx_proxy` in front of the first instance; afterwards the
    browser back on the instance's own page (its tab's token cleared first when `clear`)
    and the proxy stopped, whatever the test did."""
    proc, url = nginx_proxy(tmp, fleet.gateways[0].admin_port, tok, locations)
    try:
        yield url
    finally:
        if clear:
            b.d.execute_script("sessionStorage.clear()")
        b.d.get(fleet.admin + "/ui/")
        proc.terminate()
        proc.wait(10)


def nginx_proxy(tmp: Path, admin_port: int, tok: str,
                locations: str = "") -> tuple[subprocess.Popen[bytes], str]:
    """A real reverse proxy in front of the admin listener that adds the Authorization
    header to everything it forwards, as an OIDC-fronting proxy does once you signed in.
    `locations`: more nginx `location` blocks (what such a proxy answers itself)."""
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(exe).exists():
        pytest.fail("nginx is not installed (apt-get install -y nginx)")
    tmp.chmod(0o755)  # its workers may run as an unprivileged user
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(textwrap.dedent(f"""\
        worker_processes 1;
        pid {tmp}/nginx.pid;
        error_log {tmp}/error.log warn;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {tmp}/client_body;
            proxy_temp_path {tmp}/proxy;
            fastcgi_temp_path {tmp}/fastcgi;
            uwsgi_temp_path {tmp}/uwsgi;
            scgi_temp_path {tmp}/scgi;
            server {{
                listen 127.0.0.1:{port};
                {locations}
                location / {{
                    proxy_pass http://127.0.0.1:{admin_port};
                    proxy_http_version 1.1;
                    proxy_set_header Authorization "Bearer {tok}";
                }}
            }}
        }}
        """))
    proc = subprocess.Popen([exe, "-p", f"{tmp}/", "-c", str(conf), "-e", str(tmp / "error.log"),
                             "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited: {(tmp / 'error.log').read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return True
        except OSError:
            return False

    wait_until_sync(ready, 10, what="nginx")
    return proc, f"http://127.0.0.1:{port}"
