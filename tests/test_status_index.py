"""GET /v1/status?fields=index and ?routes=a,b on a real `killgate serve`: a route's tag
changes only when its part does, the routes named are answered alone with their tags, the
whole document's ETag/304 still holds, and every bad value is a 400 or 404 that changes
nothing."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    SECRET,
    GatewayProcess,
    admin_token,
    free_port,
    two_versions,
    write_config,
)
from tests.console_rig import start_backends

pytestmark = pytest.mark.timeout(120)

TOKEN = admin_token("killgate:read killgate:kill", "alice", 10800)
NAMES = ["iris", "lily", "rose"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp: Path = tmp_path_factory.mktemp("status-index")
    procs = start_backends("v1", "v2")
    routes = "".join(two_versions(procs[0][1], procs[1][1], name=n, prefix=f"/v2/models/{n}")
                     for n in NAMES)
    cfg = write_config(tmp, routes, listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}")
    g = GatewayProcess(cfg, env={"KILLGATE_TEST_SECRET": SECRET})
    try:
        g.wait_ready()
        _settled(g)
        yield g
    finally:
        g.stop()
        for proc, _ in procs:
            proc.kill()
            proc.wait(5)


def _settled(g: GatewayProcess, timeout: float = 15.0) -> None:
    """Wait for the config watcher's check at start (config/reload.py `start`) and then for
    two index reads a moment apart to agree: that check and the first snapshot change the
    index once, just after start (a test's 304 raced them)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        _, now, doc = _get(g, "fields=index")
        if now == last and doc["config"].get("last_attempt") is not None:
            return
        last = now
        time.sleep(0.3)  # (a poll interval: what is waited for is a quiet stretch)
    raise AssertionError(f"the status index kept changing for {timeout}s after start")


def _get(g: GatewayProcess, query: str, etag: str | None = None) -> tuple[int, str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if etag:
        headers["If-None-Match"] = etag
    req = urllib.request.Request(f"{g.admin}/v1/status?{query}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("ETag", ""), json.loads(r.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, exc.headers.get("ETag", ""), json.loads(body) if body else None


def _write(g: GatewayProcess, path: str, body: dict[str, str]) -> None:
    req = urllib.request.Request(g.admin + path, method="POST", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {TOKEN}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def test_the_index_names_each_route_and_its_tag(gateway: GatewayProcess) -> None:
    code, tag, index = _get(gateway, "fields=index")
    assert code == 200 and tag
    assert "routes" not in index and "instances" not in index
    assert list(index["route_etags"]) == NAMES
    assert all(isinstance(t, str) and len(t) == 32 for t in index["route_etags"].values())
    assert {"instance", "generation", "store", "config", "kills"} <= set(index)
    assert _get(gateway, "fields=index", tag)[0] == 304  # (nothing changed: no body)
    # the routes named, alone, in the order named, with the tags the index gave them
    code, _, some = _get(gateway, "fields=stable&routes=rose,iris,rose")
    assert code == 200 and list(some["routes"]) == ["rose", "iris"]
    assert some["route_etags"] == {n: index["route_etags"][n] for n in ("rose", "iris")}
    whole = _get(gateway, "fields=stable")[2]
    assert some["routes"]["rose"] == whole["routes"]["rose"]
    assert "route_etags" not in whole and "instances" not in whole
    assert "instances" in _get(gateway, "routes=lily")[2]  # (fields=all: the fleet too)
    code, tag, _ = _get(gateway, "fields=stable")
    assert _get(gateway, "fields=stable", tag)[0] == 304  # (the whole document's, as before)


def test_a_kill_changes_only_its_routes_tag(gateway: GatewayProcess) -> None:
    before = _get(gateway, "fields=index")[2]
    _write(gateway, "/v1/kill", {"scope": "version", "route": "lily", "version": "v2",
                                 "reason": "index-test"})
    try:
        after = _get(gateway, "fields=index")[2]  # (the write's answer came after its swap)
        assert after["generation"] > before["generation"]
        changed = [n for n in NAMES if before["route_etags"][n] != after["route_etags"][n]]
        assert changed == ["lily"], (before, after)
        lily = _get(gateway, "fields=stable&routes=lily")[2]
        assert lily["routes"]["lily"]["versions"]["v2"]["killed"] is True
        assert lily["route_etags"]["lily"] == after["route_etags"]["lily"]
    finally:
        _write(gateway, "/v1/unkill", {"scope": "version", "route": "lily", "version": "v2",
                                       "reason": "done"})


@pytest.mark.parametrize("query,code,kind", [
    ("routes=", 400, "bad_request"), ("routes=iris,,lily", 400, "bad_request"),
    ("routes=iris,", 400, "bad_request"), ("routes=iris&routes=lily", 400, "bad_request"),
    ("routes=ir%20is", 400, "bad_request"), ("routes=" + "x" * 65, 400, "bad_request"),
    ("fields=routes", 400, "bad_request"), ("routes=iris,tulip", 404, "unknown_route"),
])
def test_bad_values_are_refused_and_change_nothing(gateway: GatewayProcess, query: str,
                                                   code: int, kind: str) -> None:
    before = _get(gateway, "fields=stable")[2]
    got, _, body = _get(gateway, query)
    assert got == code and body["error"]["type"] == kind, body
    if kind == "unknown_route":
        assert "'tulip'" in body["error"]["message"] and "'iris'" not in body["error"]["message"]
    assert _get(gateway, "fields=stable")[2]["generation"] == before["generation"]


@pytest.mark.parametrize("token", [None, admin_token("killgate:kill", "bob", 600)])
def test_route_names_are_no_oracle_before_authorization(gateway: GatewayProcess,
                                                        token: str | None) -> None:
    """`?routes=` names a route there is or one there is not, without a token or with one
    lacking killgate:read: the same refusal either way (the 404 unknown_route says which
    names exist: only a reader gets it)."""
    seen = []
    for query in ("routes=iris", "routes=tulip", "fields=index&routes=tulip,iris"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        req = urllib.request.Request(f"{gateway.admin}/v1/status?{query}", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=5)
        body = json.loads(exc.value.read())
        seen.append((exc.value.code, body["error"]["type"]))
    assert len(set(seen)) == 1 and seen[0][0] in (401, 403), seen
