"""The shipped deployment read a third time (deploy review 3): what the static checks of
tests/test_kubernetes.py and tests/test_deploy_review.py left open, on real `killgate serve`
processes where the question is how killgate behaves.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config_types import parse_listen
from gateway.configfile import load_config
from tests.backends import echo_app
from tests.conftest import ROOT, GatewayProcess, free_port, two_versions, write_config
from tests.test_kubernetes import BASE, OVERLAY, _config_of, _one


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
