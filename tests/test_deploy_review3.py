"""The shipped deployment read a third time (deploy review 3): what the static checks of
tests/test_kubernetes.py and tests/test_deploy_review.py left open, on real `killgate serve`
processes where the question is how killgate behaves.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config_types import parse_listen
from gateway.configfile import load_config
from tests.backends import echo_app
from tests.conftest import ROOT, GatewayProcess, free_port, two_versions, wait_until, write_config
from tests.test_kubernetes import BASE, OVERLAY, _config_of, _container, _one


def _shipped_listeners() -> list[tuple[str, str, str]]:
    """(where, data listen, admin listen) of every config shipped for a container."""
    out = [(f"{folder.name} ConfigMap", c.listen, c.admin.listen)
           for folder in (BASE, OVERLAY) for c in [_config_of(_one("ConfigMap", folder))]]
    c = load_config(ROOT / "config/container.yaml").config
    return [*out, ("config/container.yaml", c.listen, c.admin.listen)]


def _get(host: str, port: int, path: str) -> int:
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except OSError as exc:
        return getattr(exc, "code", -1) or -1


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize(("where", "data", "admin"), _shipped_listeners(),
                         ids=lambda v: v if "/" in v or " " in v else None)
async def test_the_shipped_listeners_answer_over_ipv4_and_ipv6(
        where: str, data: str, admin: str, tmp_path: Path, backends: Any,
        gateway_procs: Callable[..., GatewayProcess]) -> None:
    """The kubelet probes a pod at its IP, Prometheus scrapes it there and drills reach it at
    `status.podIP`: in an IPv6 cluster, or a dual-stack one whose pods' first address is
    IPv6, that address is IPv6. The shipped configs listened on 0.0.0.0 (IPv4 only): such
    pods never became ready (every probe refused), and nothing said why. A listener on
    `[::]` takes both families (Linux's default, also in a container whose interfaces have
    IPv6 turned off); the image's HEALTHCHECK and `-p` still reach it over IPv4."""
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    p = await backends(echo_app("v1"))
    dport, aport = free_port(), free_port()
    dhost, ahost = parse_listen(data)[0], parse_listen(admin)[0]

    def listen(host: str, port: int) -> str:
        return f'"[{host}]:{port}"' if ":" in host else f"{host}:{port}"  # (YAML: quoted)

    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), listen=listen(dhost, dport),
                       admin=listen(ahost, aport))
    gw = gateway_procs(cfg)
    await asyncio.to_thread(gw.wait_ready)
    try:
        seen = {(fam, path): await asyncio.to_thread(_get, fam, port, path)
                for fam in ("127.0.0.1", "::1")
                for port, path in ((aport, "/readyz"), (aport, "/healthz"),
                                   (dport, "/v2/models/iris/infer"))}
        assert set(seen.values()) == {200}, (where, seen)
    finally:
        assert gw.stop() == 0, gw.output()


# ------------------------------------------------------------ memory: limit vs config

MiB = 1 << 20
#: measured (a `killgate serve` with a few routes, at rest): about 72 MiB; with room for the
#: heap's growth under load
AT_REST = 128 * MiB
#: measured: an open client connection with a partial request head, about 4.4 KiB
PER_CONNECTION = 8 << 10


def _quantity(q: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    for suffix, mult in units.items():
        if q.endswith(suffix):
            return int(q.removesuffix(suffix)) * mult
    return int(q)


def _held_per_request(cfg: Any) -> int:
    """What one request in flight may hold in memory for its whole life: the body read to
    find an OpenAI-style `model` field (up to server.model_peek_bytes) where a route matches
    on it, else a small body kept to be sent again on another version (64 KiB)."""
    from gateway.dataplane.wire import SMALL_BODY

    if any(r.match.model for r in cfg.routes):
        return max(int(cfg.server.model_peek_bytes), SMALL_BODY)
    return SMALL_BODY


@pytest.mark.parametrize("folder", [BASE, OVERLAY], ids=["base", "overlay"])
def test_the_memory_limit_holds_what_the_config_lets_requests_hold(folder: Path) -> None:
    """The pod's memory limit was 512Mi and the config left server.max_inflight at 10,000:
    a request routed by its body's `model` (the example's chat route) holds up to
    model_peek_bytes (1 MiB) of it for its whole life (the OpenAI SDK writes `model` after
    `messages`, so a long prompt is read first). About 440 such requests in flight, long
    prompts streaming answers or one client sending bodies slowly on purpose, took the
    process over the limit: the kernel killed it, every stream on the pod cut, and the
    same load then moved to the next pod. The limit must hold the process at rest, its
    connections and max_inflight requests each holding what it may; beyond max_inflight
    the gateway answers a fast 503 and holds nothing."""
    c = _container(_one("Deployment"))
    limit = _quantity(c["resources"]["limits"]["memory"])
    cfg = _config_of(_one("ConfigMap", folder))
    need = (AT_REST + cfg.server.max_connections * PER_CONNECTION
            + cfg.server.max_inflight * _held_per_request(cfg))
    assert limit >= need, (f"memory limit {limit / MiB:.0f} MiB < {need / MiB:.0f} MiB: "
                           f"max_inflight {cfg.server.max_inflight} x "
                           f"{_held_per_request(cfg) / MiB:.2f} MiB")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    raise AssertionError("no VmRSS")


async def test_a_request_waiting_for_its_model_field_holds_its_body_up_to_max_inflight(
        tmp_path: Path, backends: Any, gateway_procs: Callable[..., GatewayProcess]) -> None:
    """The measure behind the sizing above, on a real `killgate serve`: clients sending long
    prompts whose `model` field has not arrived yet each hold about that much of the
    process's memory; those beyond max_inflight get a fast 503 and hold nothing."""
    p = await backends(echo_app("a"))
    cap, extra, size = 24, 24, MiB - (64 << 10)
    routes = f"""\
        - name: chat
          match: {{path_prefix: /v1/chat/completions, model: llama-small}}
          stable: a
          versions:
            - {{name: a, url: "http://127.0.0.1:{p}", weight: 100}}
        """
    cfg = write_config(tmp_path, routes, listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}",
                       extra=f"server: {{max_inflight: {cap}, max_body_size: {4 * MiB}}}\n")
    gw = gateway_procs(cfg)
    await asyncio.to_thread(gw.wait_ready)
    body = b'{"messages": "' + b"x" * size  # ... "model" would come after
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n" % (len(body) + 64))
    socks: list[socket.socket] = []
    try:
        before = _rss(gw.proc.pid)

        def send(n: int) -> None:
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", gw.data_port), timeout=5)
                socks.append(s)
                s.sendall(head + body)

        await asyncio.to_thread(send, cap)
        held: list[int] = []

        async def all_held() -> bool:
            held.append(_rss(gw.proc.pid) - before)
            return held[-1] >= cap * size * 0.8

        await wait_until(all_held, 20, 0.1, "the prompts held")
        await asyncio.to_thread(send, extra)

        def refused() -> int:
            n = 0
            for s in socks[cap:]:
                s.settimeout(5)
                n += s.recv(12) == b"HTTP/1.1 503"
            return n

        assert await asyncio.to_thread(refused) == extra
        grown = _rss(gw.proc.pid) - before
        assert grown < cap * size * 1.5, (grown / MiB, held[-1] / MiB)
    finally:
        for s in socks:
            s.close()
        assert gw.stop() == 0, gw.output()


# ------------------------------------------------------- scraping under the operator


def test_a_prometheus_operator_finds_every_pod_to_scrape(tmp_path: Path) -> None:
    """The pods told Prometheus to scrape them only through `prometheus.io/*` annotations,
    which the Prometheus operator (kube-prometheus-stack and the like) does not read: there,
    no series arrived, so no shipped alert could fire (KillgateInstanceDown included: it
    looks for targets that exported killgate's series). The optional component
    components/prometheus-operator adds a PodMonitor scraping what the annotations name:
    the gateway pods (not the drill's), the admin port, /metrics."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    copy = tmp_path / "kubernetes"
    shutil.copytree(ROOT / "deploy" / "kubernetes", copy)
    overlay = copy / "overlays" / "example"
    shutil.copy(overlay / "keys.env.example", overlay / "keys.env")
    shutil.copy(overlay / "drill-key.env.example", overlay / "drill-key.env")
    with (overlay / "kustomization.yaml").open("a") as f:
        f.write("components:\n  - ../../components/prometheus-operator\n")
    out = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    (mon,) = [d for d in docs if d["kind"] == "PodMonitor"]
    assert mon["apiVersion"] == "monitoring.coreos.com/v1"
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    assert mon["metadata"]["namespace"] == dep["metadata"]["namespace"]
    pod = dep["spec"]["template"]
    selector = mon["spec"]["selector"]["matchLabels"]
    assert set(mon["spec"]) == {"selector", "podMetricsEndpoints"}, mon["spec"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    (cron,) = [d for d in docs if d["kind"] == "CronJob"]
    drill = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= drill.items()  # (a drill's pod serves no /metrics)
    (ep,) = mon["spec"]["podMetricsEndpoints"]
    assert set(ep) <= {"port", "path", "interval"}, ep  # (fields of PodMetricsEndpoint)
    ann = pod["metadata"]["annotations"]
    ports = {p["name"]: p["containerPort"] for p in _container(dep)["ports"]}
    assert str(ports[ep["port"]]) == ann["prometheus.io/port"]
    assert ep["path"] == ann["prometheus.io/path"]


def test_the_documented_commands_put_no_secret_on_a_command_line() -> None:
    """README's `podman run` passed the JWT secret as `-e KILLGATE_JWT_SECRET=...`, and
    secret.yaml's `kubectl create secret` as `--from-literal=...="$(openssl ...)"`: a value
    in a command's arguments is kept in the shell's history (the first) and shown by `ps` to
    every user of the machine while the command runs (both)."""
    from tests.test_deploy_review import _container_run_command

    args = _container_run_command()
    for flag, value in itertools.pairwise(args):
        if flag in ("-e", "--env"):
            assert "=" not in value, value  # (the value from the caller's environment)
    secret = (BASE / "secret.yaml").read_text()
    assert "--from-literal" not in secret
    assert "--from-env-file=keys.env" in secret
