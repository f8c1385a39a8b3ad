"""What a new user and a platform team meet first, read as an attacker would (deploy review 5).

Static checks of the documented container run that tests/test_deploy_review.py and
tests/test_deploy_review3.py do not make."""

from __future__ import annotations

import ipaddress
import itertools
from pathlib import Path

from tests.conftest import ROOT
from tests.test_deploy_review import _container_run_command


def test_the_documented_container_run_keeps_the_admin_port_off_the_network() -> None:
    """README "Container image" published the admin port as `-p 8081:8081`: podman and
    docker then listen on every address of the host (docker past the host's firewall too),
    so the admin API (kill, unkill, rollback; /metrics, /readyz and the console without a
    token) answered anyone who reached the host, while the README says never to put it
    where untrusted clients reach it. Only the data port may be published on every
    address; the admin port on a loopback address."""
    from gateway.configfile import load_config

    args = _container_run_command()
    mounts = dict(reversed(v.split(":")[:2]) for f, v in itertools.pairwise(args) if f == "-v")
    cfg = load_config(Path(mounts["/etc/killgate/config.yaml"].replace("$PWD", str(ROOT)))).config
    admin_port = int(cfg.admin.listen.rsplit(":", 1)[1])
    published = [v for f, v in itertools.pairwise(args) if f in ("-p", "--publish")]
    admin = [v for v in published if int(v.rsplit(":", 1)[1]) == admin_port]
    assert admin, published  # (the README shows how to reach it from the host)
    for value in admin:
        parts = value.split(":")
        assert len(parts) == 3, f"-p {value} publishes the admin API on every host address"
        assert ipaddress.ip_address(parts[0].strip("[]")).is_loopback, value
