"""The CLI's words and exit paths in an incident, from a hostile review (revops): status
flags in words, --json errors, and the messages an operator acts on (outcome_unknown, audit
verify with a missing or wrong key, diff of a file that leaves a kill stopping nothing). Each
failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import free_port, two_versions, write_config
from tests.faultproxy import Forwarder, redis_state_via
from tests.test_cli import acli
from tests.test_killswitch import token

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize(("store", "routes", "said"), [
    ({"synced": False, "from_snapshot": False},
     {"iris": {"killed": "state_unknown", "stable": "v1", "versions": {}}},
     "STATE UNKNOWN"),
    ({"synced": False, "from_snapshot": True}, {}, "NOT SYNCED: enforcing the kills of its"),
    ({"audit": {"trail_lost": {"time": "t"}}}, {}, "AUDIT TRAIL LOST"),
    ({"connected": False, "last_error": "redis down"}, {}, "STORE ERROR: redis down"),
    ({"connected": False}, {}, "INSTANCES: unknown (this instance cannot reach the store)"),
    ({"audit": {"mirror": {"path": "m", "refused": {"problem": "re-sealed"}}}}, {},
     "AUDIT MIRROR STOPPED (m): re-sealed"),
    ({"verification": {"unverified_total": 2, "unverified": {"state": 2},
                       "last_unverified": {"kind": "state", "problem": "bad mac"}}}, {},
     "UNVERIFIED: 2 value(s)"),
    ({"snapshot": {"path": "s", "ok": False, "generation": 4, "error": "cannot write s: x"}},
     {}, "SNAPSHOT NOT WRITTEN: cannot write s: x; the file holds generation 4"),
    ({"unverifiable": "the stored state cannot be verified (k)"}, {},
     "STATE UNVERIFIABLE: the stored state cannot be verified (k). NOT READY"),
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


async def test_outcome_unknown_does_not_ask_for_what_the_cli_cannot_do(
        tmp_path: Path, backends, fwd: Forwarder) -> None:
    """The store took an unkill but its reply never came (a failover mid-write): 503
    `outcome_unknown` told the operator to "retry with the same Idempotency-Key", which
    the CLI gives no way to do, and which the gateway had released with the failure anyway
    (a retry with it runs the write again, as a new one would). Now (impstate2) the key
    names the write tried, the 503 says so with a Retry-After, and the CLI itself sends
    the unkill once more with its key: answered with the first attempt's result (it
    landed), exit 0, not `409 not_killed`."""
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
        assert u.returncode == 0, (u.stdout, u.stderr)
        assert "outcome_unknown" in u.stderr and "once more" in u.stderr, u.stderr
        assert "not_killed" not in u.stdout + u.stderr
        assert "route:iris" not in g.gw.holder.doc.kills


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
        # the break names the newest event by its id, as every other break does (it said
        # "(id (newest))": revnewuser7)
        newest = json.loads((await acli("audit", "--json", "--limit", "1", env=env)).stdout)
        assert f"(id {newest['events'][0]['id']}): the newest event carries no MAC" \
            in res.stderr, res.stderr
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


async def test_a_kill_only_token_causes_no_refusal_in_the_trail(tmp_path: Path,
                                                                backends) -> None:
    """After each write the CLI asks GET /v1/fleet for silent instances; with a token of
    `killgate:kill` alone that call is refused, and every refusal is audited (authz_fail):
    each kill would have added a denial to the trail. The CLI reads the token's scopes
    first, as `unkill` does before reading /v1/status."""
    from tests.conftest import running_gateway, wait_until

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token("killgate:kill", "kay")}
        k = await acli("kill", "--route", "iris", "--reason", "INC-7", env=env)
        assert k.returncode == 0, k.stderr
        s = await acli("status", env=env)  # refused: the denial that must show up
        assert s.returncode == 1 and "403" in s.stderr, s.stderr
        admin = {**env, "KILLGATE_TOKEN": token("killgate:admin")}

        async def denied() -> list[str] | None:
            out = (await acli("audit", env=admin)).stdout.splitlines()
            rows = [ln for ln in out if "authz_fail" in ln]
            return rows if any("/v1/status" in r for r in rows) else None

        rows = await wait_until(denied, 15, 0.2, "the refused status in the trail")
        assert not any("/v1/fleet" in r for r in rows), rows


def test_audit_verify_of_an_empty_mirror_says_what_it_could_not_check(tmp_path: Path) -> None:
    """A mirror file cut to nothing verified as "audit mirror ok: 0 event(s)": nothing
    anchors a mirror's end, and the output did not say so (the store's check names its
    anchored head)."""
    from tests.test_cli import cli

    empty = tmp_path / "mirror.jsonl"
    empty.write_text("")
    res = cli("audit", "verify", "--mirror", str(empty))
    assert "not anchored" in res.stdout and "holds no event" in res.stdout, res.stdout


def test_a_drill_stopped_by_failover_says_where_to_look() -> None:
    """During an incident v2 is killed on `iris`; a drill of v2 on `iris-drill` stopped
    with "requests already fail over before the injection", without a word on why (the
    production kill holds on the drill route) or where to look."""
    from gateway.domain.drillreport import steady_problems
    from tests.test_drillreport import kill_plan, killed_at, timeline

    moved = timeline("a", 1.0, killed_at(0.5))
    said = steady_problems(kill_plan(), None, moved, ["a"], (0.0, 1.0))[0]
    assert "already fail over" in said and "kill" in said.split("injection", 1)[1], said
    assert "killgate status" in said, said
