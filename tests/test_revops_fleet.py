"""An incident on a fleet, driven only through the CLI, from a hostile review (revops):
what `killgate status` and the other commands tell a tired operator. Each failed before
its fix."""

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
        fwd.point(free_port())  # B's store is gone: every connection dropped, none made
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



@pytest.mark.parametrize(("store", "routes", "said"), [
    ({"synced": False, "from_snapshot": False},
     {"iris": {"killed": "state_unknown", "stable": "v1", "versions": {}}},
     "STATE UNKNOWN"),
    ({"synced": False, "from_snapshot": True}, {}, "NOT SYNCED: enforcing the kills of its"),
    ({"audit": {"trail_lost": {"time": "t"}}}, {}, "AUDIT TRAIL LOST"),
    ({"audit": {"mirror": {"path": "m", "refused": {"problem": "re-sealed"}}}}, {},
     "AUDIT MIRROR STOPPED (m): re-sealed"),
    ({"verification": {"unverified_total": 2, "unverified": {"state": 2},
                       "last_unverified": {"kind": "state", "problem": "bad mac"}}}, {},
     "UNVERIFIED: 2 value(s)"),
])
def test_status_says_what_the_document_only_flags(store: dict[str, object],
                                                  routes: dict[str, object], said: str) -> None:
    """The JSON flags these (README: `/v1/status shows the routes killed: "state_unknown"`,
    `store.audit.trail_lost`, `store.audit.mirror.refused`, `store.verification`); the text
    of `killgate status` said none of them."""
    from gateway.cli.admin import _status_text

    st = {"instance": "gw-1", "generation": 3, "config": {"digest": "sha256:0"}, "kills": [],
          "store": {"backend": "redis", "connected": True, **store}, "routes": routes}
    text = _status_text(st)
    assert said in text, text


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
        a = await _serve(gateway_procs, tmp_path / "a", routes,
                         _state(redis_server, tmp_path / "a", instance_lease="1s") + gate)
        b = await _serve(gateway_procs, tmp_path / "b", routes,
                         redis_state_via(fwd, tmp_path / "b", "revops", heartbeat_interval="200ms",
                                         command_timeout="300ms", instance_lease="1s") + gate)
        await wait_until(lambda: _has_two(a.admin), 15, 0.1, "both instances in the fleet")
        fwd.point(free_port())
        await wait_until(lambda: _has_one(a.admin), 15, 0.1, "B's lease to run out")
        env = {"KILLGATE_TOKEN": token("killgate:admin")}
        k = await acli("kill", "--route", "iris", "--version", "v2", "--reason", "INC-2",
                       "--admin", a.admin, env=env)
        assert k.returncode == 0 and "applied by 1/1" in k.stdout, (k.stdout, k.stderr)
        assert "WARNING" in k.stderr and _name(b.output()) in k.stderr, k.stderr
        res = await _status(a.admin)
        rows = [ln for ln in res.stdout.splitlines() if ln.startswith(_name(b.output()))]
        assert rows and "SILENT" in rows[0], res.stdout
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


async def test_json_errors_are_json_on_stdout(tmp_path: Path, backends) -> None:
    """Runbook scripts parse `--json` output. On an error every command printed nothing on
    stdout (the message on stderr only): `x=$(killgate --json unkill ...)` held no JSON,
    whatever the failure. Expected: `{"error": {"message", "exit", and for an answer of the
    API its "status" and "type"}}`, the message still on stderr, the exit code unchanged."""
    from tests.conftest import running_gateway

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token("killgate:admin")}
        cases = [
            (["unkill", "--route", "iris", "--reason", "x"], 1, 409, "not_killed"),
            (["kill", "--route", "nope", "--reason", "x"], 1, 404, "unknown_route"),
            (["rollback", "iris", "--reason", "x"], 1, 409, "no_previous_stable"),
            (["status", "--admin", f"http://127.0.0.1:{free_port()}"], 1, None, None),
            (["diff", str(tmp_path / "missing.yaml")], 1, None, None),
            (["drill", "kill", "--route", "nope", "--version", "v2"], 1, None, None),
            (["drill", "run", str(tmp_path / "missing.yaml")], 2, None, None),
        ]
        for args, code, status, kind in cases:
            res = await acli("--json", *args, env=env)
            assert res.returncode == code, (args, res.stdout, res.stderr)
            assert res.stderr.strip(), (args, res.stderr)
            err = json.loads(res.stdout)["error"]
            assert err["exit"] == code and err["message"], (args, err)
            assert err.get("status") == status and err.get("type") == kind, (args, err)


def test_the_instance_that_answered_is_never_behind_itself() -> None:
    """Its own heartbeat acks a change a moment after applying it (ACK_AFTER): a status read
    in between showed the instance that answered as BEHIND itself."""
    from gateway.cli.statuswarn import instance_rows

    st = {"instance": "a", "generation": 5,
          "instances": {"a": {"generation": 4}, "b": {"generation": 4}}}
    rows = {r[0]: r[-1] for r in instance_rows(st, [])[1:]}
    assert rows["a"] == "" and rows["b"].startswith("BEHIND"), rows


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


async def test_outcome_unknown_does_not_ask_for_what_the_cli_cannot_do(
        tmp_path: Path, backends, fwd: Forwarder) -> None:
    """The store took an unkill but its reply never came (a failover mid-write): 503
    `outcome_unknown` told the operator to "retry with the same Idempotency-Key", which
    the CLI gives no way to do, and which the gateway had released with the failure anyway
    (a retry with it runs the write again, as a new one would). Expected: what to check,
    and what a retry does."""
    from tests.conftest import running_gateway

    p = await backends(echo_app("v1"))
    state = redis_state_via(fwd, tmp_path, "revops-ou", command_timeout="300ms")
    cfg = write_config(tmp_path, two_versions(p, p), state=state)
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token("killgate:admin")}
        k = await acli("kill", "--route", "iris", "--reason", "INC-4", env=env)
        assert k.returncode == 0, k.stderr
        # the connections: "cmd" (reads, the idempotency claim; made first, by the start's
        # load), the subscription, and "write" (commits): its replies are lost from now on
        writes = [ln for ln in fwd.links if b"SUBSCRIBE" not in ln.head][1:]
        assert writes, [ln.head[:80] for ln in fwd.links]
        for link in writes:
            link.muted = True
        u = await acli("unkill", "--route", "iris", "--reason", "INC-4 over", env=env)
        assert u.returncode == 1 and "outcome_unknown" in u.stderr, (u.stdout, u.stderr)
        assert "same Idempotency-Key" not in u.stderr, u.stderr
        assert "killgate status" in u.stderr and "409 not_killed" in u.stderr, u.stderr


async def test_audit_verify_without_the_key_asks_for_the_fleets(tmp_path: Path, backends,
                                                                 monkeypatch) -> None:
    """`killgate audit verify -c FILE` in a shell without the fleet's key variable said
    "set it ... e.g. `export KILLGATE_TEST_STATE_KEY=$(openssl rand -hex 32)`": a tired
    operator who does that gets "audit chain BROKEN" (no MAC verifies under a new key).
    Expected: asks for the fleet's key, never a new one; with --json, an error object."""
    from tests.conftest import running_gateway

    p = await backends(echo_app("v1"))
    state = (f"state:\n  backend: local\n  path: {tmp_path}/store.json\n"
             f"  signing_key_env: KILLGATE_TEST_STATE_KEY\n")
    cfg = write_config(tmp_path, two_versions(p, p), state=state)
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token("killgate:admin")}
        monkeypatch.delenv("KILLGATE_TEST_STATE_KEY")
        for json_flag in ([], ["--json"]):
            res = await acli("audit", "verify", "-c", str(cfg), *json_flag, env=env)
            assert res.returncode == 1, (res.stdout, res.stderr)
            assert "openssl rand" not in res.stderr, res.stderr
            assert "the key the fleet runs with" in res.stderr, res.stderr
            if json_flag:
                assert json.loads(res.stdout)["error"]["exit"] == 1


async def test_audit_verify_with_another_key_says_so(tmp_path: Path, backends) -> None:
    """With a key that is not the fleet's (a wrong variable, the staging key), `audit
    verify` said only "audit chain BROKEN ... the newest event carries no MAC under a key
    given here", which reads as tampering. Expected (still exit 1: nothing authenticates the
    trail): first, that the trail is sealed under another key id than the one given."""
    from tests.conftest import running_gateway

    p = await backends(echo_app("v1"))
    state = (f"state:\n  backend: local\n  path: {tmp_path}/store.json\n"
             f"  signing_key_env: KILLGATE_TEST_STATE_KEY\n")
    cfg = write_config(tmp_path, two_versions(p, p), state=state)
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token("killgate:admin")}
        k = await acli("kill", "--route", "iris", "--reason", "INC-5", env=env)
        assert k.returncode == 0, k.stderr
        res = await acli("audit", "verify", "--key-env", "OTHER_KEY",
                         env={**env, "OTHER_KEY": "x" * 40})
        assert res.returncode == 1, (res.stdout, res.stderr)
        first = res.stderr.splitlines()[0]
        assert "key id(s)" in first and "the fleet's key" in first, res.stderr
        ok = await acli("audit", "verify", "-c", str(cfg), env=env)
        assert ok.returncode == 0 and "key id" not in ok.stderr, (ok.stdout, ok.stderr)


async def test_diff_names_the_kills_a_file_leaves_stopping_nothing(tmp_path: Path,
                                                                   backends) -> None:
    """During an incident (route iris killed) a pull request renames the route (iris →
    iris-v2, same match). `killgate diff` showed "route removed / route added" and nothing
    about the kill: once applied, the kill stays in force on a name no request reaches, and
    the renamed route serves the killed traffic. Expected: the kill named, with what it
    means; `kills_unrouted` in --json."""
    from tests.conftest import running_gateway

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    renamed = write_config(tmp_path, two_versions(p, p, name="iris-v2"), name="renamed.yaml")

    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token("killgate:admin")}
        k = await acli("kill", "--route", "iris", "--reason", "INC-6", env=env)
        assert k.returncode == 0, k.stderr
        res = await acli("diff", str(renamed), env=env)
        assert res.returncode == 2, (res.stdout, res.stderr)
        assert "STOPPING NOTHING" in res.stdout and "route:iris" in res.stdout, res.stdout
        res = await acli("diff", str(renamed), "--json", env=env)
        assert json.loads(res.stdout)["kills_unrouted"][0]["kill"] == "route:iris", res.stdout
        same = await acli("diff", str(cfg), "--json", env=env)
        assert "kills_unrouted" not in json.loads(same.stdout), same.stdout
