"""An incident on a fleet, driven only through the CLI, from a hostile review (revops):
real `killgate serve` processes on a real redis (one cut off from it through a fault
proxy), sentinels: what `killgate status` and the writes tell a tired operator about
instances that do not enforce what the fleet does. Each failed before its fix. The CLI's
messages and --json paths: tests/test_revops_cli.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import RedisServer, free_port, two_versions, wait_until, write_config
from tests.faultproxy import Forwarder, redis_state_via
from tests.test_cli import acli
from tests.test_killswitch import token

pytestmark = pytest.mark.timeout(90)


def _state(redis: RedisServer, tmp: Path, **opts: str) -> str:
    lines = {"poll_interval": "100ms", "heartbeat_interval": "200ms", "command_timeout": "300ms",
             **opts}
    return (f"state:\n  backend: redis\n  url: redis://127.0.0.1:{redis.port}/0\n"
            f"  prefix: revops\n  snapshot_path: {tmp}/snap.json\n"
            f"  signing_key_env: KILLGATE_TEST_STATE_KEY\n"
            + "".join(f"  {k}: {v}\n" for k, v in lines.items()))


async def _serve(start, tmp: Path, routes: str, state: str):  # type: ignore[no-untyped-def]
    await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
    cfg = write_config(tmp, routes, state=state, listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}")
    gw = start(cfg)
    await asyncio.to_thread(gw.wait_ready)
    return gw


async def _status(admin: str) -> subprocess.CompletedProcess[str]:
    return await acli("status", "--admin", admin, env={"KILLGATE_TOKEN": token("killgate:admin")})


async def test_status_names_a_stale_instance_and_one_behind(tmp_path: Path, backends,
                                                            redis_server: RedisServer,
                                                            gateway_procs) -> None:
    """Instance B loses the store (its link is cut) while A takes a kill. `killgate status`
    on B printed only `state 2345.6 ms old` among the numbers, never that B is stale and does
    not enforce what the fleet does (`store.stale` in the JSON); on A, B's row showed an older
    generation with nothing to say it had not applied the kill. Expected: STALE on B, and
    BEHIND beside B on A."""
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p)
    fwd = Forwarder(redis_server.port)
    await fwd.start()
    try:
        a = await _serve(gateway_procs, tmp_path / "a", routes,
                         _state(redis_server, tmp_path / "a", instance_lease="30s",
                                max_staleness="1s"))
        b = await _serve(gateway_procs, tmp_path / "b", routes,
                         redis_state_via(fwd, tmp_path / "b", "revops", heartbeat_interval="200ms",
                                         command_timeout="300ms", instance_lease="30s",
                                         max_staleness="1s"))
        await wait_until(lambda: _has_two(a.admin), 15, 0.1, "both instances in the fleet")
        fwd.point(None)  # B's store is gone: every connection dropped, none made
        env = {"KILLGATE_TOKEN": token("killgate:admin")}
        k = await acli("kill", "--route", "iris", "--version", "v2", "--reason", "INC-1",
                       "--wait", "500ms", "--admin", a.admin, env=env)
        assert k.returncode == 4 and "NOT YET" in k.stdout, (k.stdout, k.stderr)

        async def stale_said() -> str | None:
            res = await _status(b.admin)
            return res.stdout if "STALE" in res.stdout else None

        text = await wait_until(stale_said, 15, 0.2, "status on B to say STALE")
        assert "may NOT be in force here" in text, text
        res = await _status(a.admin)
        rows = [ln for ln in res.stdout.splitlines() if ln.startswith(_name(b.output()))]
        assert rows and "BEHIND" in rows[0], res.stdout
    finally:
        await fwd.close()


def _name(log: str) -> str:
    """The instance name a `killgate serve` log gives (its `phase config` line)."""
    return log.split('instance="', 1)[1].split('"', 1)[0]


async def _has_two(admin: str) -> bool:
    res = await acli("status", "--json", "--admin", admin,
                     env={"KILLGATE_TOKEN": token("killgate:admin")})
    return res.returncode == 0 and len(json.loads(res.stdout).get("instances") or {}) == 2



async def test_status_lists_an_instance_cut_off_from_the_store(tmp_path: Path, backends,
                                                               redis_server: RedisServer,
                                                               gateway_procs) -> None:
    """B is cut off from the store but serves on. Once its lease ran out, a kill through A
    was "applied by 1/1 instance(s)" and `killgate status` on A listed A alone: nothing said
    that B, still answering clients, had not applied it. Expected: the kill warns naming B,
    and status shows B's row, SILENT."""
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p)
    fwd = Forwarder(redis_server.port)
    await fwd.start()
    try:
        gate = "approvals: {unkill_version: 2}\n"
        # (a lease of 3 s: B is SILENT from 3 s after its last heartbeat until its entry
        # is dropped at 10 leases, 30 s: with 1 s, a loaded CI run took more than the 10 s
        # left between B's lease running out and the approval below)
        a = await _serve(gateway_procs, tmp_path / "a", routes,
                         _state(redis_server, tmp_path / "a", instance_lease="3s") + gate)
        b = await _serve(gateway_procs, tmp_path / "b", routes,
                         redis_state_via(fwd, tmp_path / "b", "revops", heartbeat_interval="200ms",
                                         command_timeout="300ms", instance_lease="3s") + gate)
        await wait_until(lambda: _has_two(a.admin), 15, 0.1, "both instances in the fleet")
        fwd.point(None)
        await wait_until(lambda: _has_one(a.admin), 15, 0.1, "B's lease to run out")
        env = {"KILLGATE_TOKEN": token("killgate:admin")}
        k = await acli("kill", "--route", "iris", "--version", "v2", "--reason", "INC-2",
                       "--admin", a.admin, env=env)
        assert k.returncode == 0 and "applied by 1/1" in k.stdout, (k.stdout, k.stderr)
        assert "WARNING" in k.stderr and _name(b.output()) in k.stderr, k.stderr
        res = await _status(a.admin)
        rows = [ln for ln in res.stdout.splitlines() if ln.startswith(_name(b.output()))]
        assert rows and "SILENT" in rows[0], res.stdout
        # and --json says it too (only the text did: a script monitoring it missed B)
        as_json = await acli("status", "--json", "--admin", a.admin, env=env)
        silent = json.loads(as_json.stdout)["silent_instances"]
        assert [r["instance"] for r in silent] == [_name(b.output())], as_json.stdout
        # an unkill applied by its approval says the same
        asked = await acli("--json", "unkill", "--route", "iris", "--version", "v2",
                           "--reason", "INC-2 over", "--admin", a.admin, env=env)
        assert asked.returncode == 3, (asked.stdout, asked.stderr)
        ident = json.loads(asked.stdout)["approval"]["id"]
        ok = await acli("approve", ident, "--admin", a.admin,
                        env={"KILLGATE_TOKEN": token("killgate:admin", "bob")})
        assert ok.returncode == 0 and "approved and applied" in ok.stdout, (ok.stdout, ok.stderr)
        assert "WARNING" in ok.stderr and _name(b.output()) in ok.stderr, ok.stderr
    finally:
        await fwd.close()


async def _has_one(admin: str) -> bool:
    res = await acli("status", "--json", "--admin", admin,
                     env={"KILLGATE_TOKEN": token("killgate:admin")})
    return res.returncode == 0 and len(json.loads(res.stdout).get("instances") or {}) == 1


async def test_not_durable_says_what_to_do_when_no_replica_is_attached(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs) -> None:
    """After a Sentinel failover the promoted replica has no replica of its own until the
    old primary comes back. Every kill then answered 503 `not_durable` "... retry the same
    call until it is confirmed", and a retry can never be: the operator retried in a loop.
    Expected: the message says that no replica may be attached and what to check."""
    p = await backends(echo_app("v1"))
    gw = await _serve(gateway_procs, tmp_path / "a", two_versions(p, p),
                      _state(redis_server, tmp_path / "a", min_replicas="1",
                             replica_timeout="200ms"))
    env = {"KILLGATE_TOKEN": token("killgate:admin")}
    for _ in range(2):  # the retry the message asks for gets the same answer
        k = await acli("kill", "--route", "iris", "--reason", "INC-3", "--admin", gw.admin,
                       env=env)
        assert k.returncode == 1 and "not_durable" in k.stderr, (k.stdout, k.stderr)
    assert "INFO replication" in k.stderr and "replica(s) attached" in k.stderr, k.stderr


async def test_a_frozen_master_is_named_in_the_error(tmp_path: Path) -> None:
    """The master the sentinels name is frozen (SIGSTOP; sentinels have not failed over
    yet). A kill answered 503 `state_store_unavailable` "... no sentinel named a master:
    127.0.0.1:PORT: " — the sentinels had named one, and why it failed was empty (a
    timeout's text). Expected: that the named node did not answer, and that it timed out."""
    import signal

    from gateway.state.resp import connect, parse_endpoint
    from tests.redisha import RedisNode

    master = RedisNode(tmp_path, "master")
    sentinel = RedisNode(tmp_path, "sentinel", sentinel=True)
    try:
        master.start()
        sentinel.start(f"sentinel monitor kgfrozen 127.0.0.1 {master.port} 1\n"
                       "sentinel down-after-milliseconds kgfrozen 600000\n")
        assert master.proc is not None
        master.proc.send_signal(signal.SIGSTOP)
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/kgfrozen/0"
        with pytest.raises(ConnectionError) as got:
            await asyncio.wait_for(connect(parse_endpoint(url), 0.3), 10)
        msg = str(got.value)
        assert "no sentinel named a master" not in msg and "answered as the master" in msg, msg
        assert f"127.0.0.1:{master.port}: TimeoutError" in msg, msg
    finally:
        if master.proc is not None:
            master.proc.send_signal(signal.SIGCONT)
        master.stop()
        sentinel.stop()
