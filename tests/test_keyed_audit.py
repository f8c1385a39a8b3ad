"""RELIABILITY row 52: the keyed, anchored audit trail, against a real redis-server.

Edit, delete, reorder, insert, truncate and re-seal of events in Redis are all caught by
`killgate audit verify` with the key (and it says which checks it could make without
one); a forged chain is never appended to the mirror; a flushed store is reported, not
"ok: 1 event"; `audit verify --mirror FILE` checks a mirror on its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from gateway.domain.audit import GENESIS, audit_mac, seal
from gateway.domain.auditverify import verify_trail
from tests import cli_fork
from tests.backends import echo_app
from tests.conftest import (
    ROOT,
    STATE_KEY,
    STATE_KEY_ENV,
    RedisServer,
    admin_token,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.test_killswitch import redis_state

TOKEN = admin_token("killgate:admin", "alice", 3 * 3600)
H = {"Authorization": f"Bearer {TOKEN}"}
KEY = ["--key-env", STATE_KEY_ENV]


def verify(admin: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`killgate audit verify` in a process of its own, forked from one that imported the
    CLI already (tests/cli_fork.py; a fresh interpreter each time cost this file ~0.6 s of
    imports per call, a dozen calls in a test)."""
    return cli_fork.run(["audit", "verify", "--admin", admin, "--token", TOKEN, *extra],
                        dict(os.environ), str(ROOT), 30)


def verify_mirror(path: Path) -> subprocess.CompletedProcess[str]:
    return cli_fork.run(["audit", "verify", "--mirror", str(path), *KEY], dict(os.environ),
                        str(ROOT), 30)


async def actions(session: Any, admin: str, n: int = 3) -> None:
    for i in range(n):
        for path in ("/v1/kill", "/v1/unkill"):
            async with session.post(admin + path, headers=H, json={
                    "scope": "route", "route": "iris", "reason": f"r{i}"}) as r:
                assert r.status == 200, await r.text()


def events_in(redis: RedisServer) -> list[dict[str, Any]]:
    raw = subprocess.run(["redis-cli", "-p", str(redis.port), "--raw", "XRANGE", "kgtest:audit",
                          "-", "+"], capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in raw.splitlines() if line.startswith("{")]


def rewrite(redis: RedisServer, events: list[dict[str, Any]]) -> None:
    redis.cmd("DEL", "kgtest:audit")
    for e in events:
        redis.cmd("XADD", "kgtest:audit", "*", "e", json.dumps(e, ensure_ascii=False))


def resealed(events: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    """Events from `start` on re-sealed the way an attacker without the key can: new hashes,
    MACs dropped (or copied: they no longer match)."""
    out = list(events[:start])
    prev = out[-1]["hash"] if out else GENESIS
    for e in events[start:]:
        e = seal({k: v for k, v in e.items() if k not in ("hash", "mac", "prev_hash")}, prev)
        out.append(e)
        prev = e["hash"]
    return out


async def test_every_tampering_is_caught_with_the_key(tmp_path: Path, backends, session,
                                                      redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await actions(session, g.admin)
        ok = await asyncio.to_thread(verify, g.admin, *KEY)
        assert ok.returncode == 0, ok.stderr
        assert "MACs checked: " in ok.stdout and "anchored head: present" in ok.stdout
        nokey = await asyncio.to_thread(verify, g.admin)
        assert nokey.returncode == 0 and "MACs NOT checked" in nokey.stdout
        genuine = events_in(redis_server)
        assert all(e.get("mac") and e.get("kid") for e in genuine)
        i = len(genuine) - 3
        edited = [*genuine[:i], {**genuine[i], "reason": "nothing to see"}, *genuine[i + 1:]]
        cases = {
            "edit": (edited, "hash does not match"),
            "delete": ([*genuine[:i], *genuine[i + 1:]], "prev_hash does not match"),
            "reorder": ([*genuine[:i], genuine[i + 1], genuine[i], *genuine[i + 2:]],
                        "prev_hash does not match"),
            "insert": ([*genuine[:i], seal({"id": "forged", "action": "unkill"},
                                           genuine[i - 1]["hash"]), *genuine[i:]],
                       "no MAC under a key given here"),
            "truncate": (genuine[:-2], "cut off the end"),
            "reseal": (resealed(edited, i), "no MAC under a key given here"),
            "reseal, MACs kept": ([*resealed(edited, i)[:i], *(
                {**e, "kid": genuine[i]["kid"], "mac": genuine[n]["mac"]}
                for n, e in enumerate(resealed(edited, i)[i:], i))], "mac does not match"),
            "reseal, head key reset": (resealed(edited, i), "no MAC under a key given here"),
        }
        for how, (tampered, problem) in cases.items():
            rewrite(redis_server, tampered)
            if "head key" in how:  # the unsigned head key follows the forged chain
                redis_server.cmd("SET", "kgtest:audit:head", tampered[-1]["hash"])
            res = await asyncio.to_thread(verify, g.admin, *KEY)
            assert res.returncode == 1, (how, res.stdout)
            assert "BROKEN at event #" in res.stderr and problem in res.stderr, (how, res.stderr)
            rewrite(redis_server, genuine)
        # without the key, a re-sealed chain passes the hash checks alone: the output says so
        rewrite(redis_server, resealed(edited, i)[:-2])
        res = await asyncio.to_thread(verify, g.admin, "--json")
        report = json.loads(res.stdout or res.stderr)
        assert report["macs_checked"] == 0 and report["hashes_checked"] == len(genuine) - 2
        rewrite(redis_server, genuine)
        assert (await asyncio.to_thread(verify, g.admin, *KEY)).returncode == 0


async def test_a_flushed_store_is_reported_and_the_mirror_holds_everything(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    mirror = tmp_path / "mirror.jsonl"
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(
        redis_server, tmp_path, extra=f"  audit_mirror: {mirror}\n"))
    async with running_gateway(cfg) as g:
        await actions(session, g.admin, 2)
        n = len(events_in(redis_server))
        await wait_until(lambda: mirror.exists() and len(mirror.read_text().splitlines()) == n,
                         5, what="the mirror to catch up")
        redis_server.cmd("FLUSHALL")
        await wait_until(lambda: redis_server.cmd("EXISTS", "kgtest:state") == "1", 10,
                         what="the re-seed")
        res = await asyncio.to_thread(verify, g.admin, *KEY)
        assert res.returncode == 1, res.stdout
        assert "were lost (a flushed or truncated store)" in res.stderr
        assert g.gw.metrics.get("killgate_audit_trail_lost_total") == 1
        assert g.gw.sync.status()["audit"]["trail_lost"]["anchored_head"]
        # the mirror continues across the flush: every event, one chain
        await actions(session, g.admin, 1)
        total = n + 1 + 2  # + the re-seed event + kill/unkill
        await wait_until(lambda: len(mirror.read_text().splitlines()) >= total, 5,
                         what="the mirror to continue")
        assert g.gw.sync.status()["audit"]["mirror"]["ok"]
    res = await asyncio.to_thread(verify_mirror, mirror)
    assert res.returncode == 0, res.stderr
    assert f"audit mirror ok: {total} event(s)" in res.stdout and "MACs checked: " in res.stdout


async def test_the_mirror_refuses_a_forged_chain(tmp_path: Path, backends, session,
                                                 redis_server: RedisServer,
                                                 monkeypatch) -> None:
    from tests.test_events import HOOK_SECRET, Receiver

    monkeypatch.setenv("KILLGATE_TEST_HOOK_SECRET", HOOK_SECRET)
    hook = Receiver()
    hport = await backends(hook.app())
    p = await backends(echo_app("v1"))
    mirror = tmp_path / "mirror.jsonl"
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(
        redis_server, tmp_path, extra=f"  audit_mirror: {mirror}\n"), extra=(
        f"events:\n  webhooks:\n    - {{url: 'http://127.0.0.1:{hport}/hook', "
        "secret_env: KILLGATE_TEST_HOOK_SECRET, events: [audit.mirror_refused]}\n"))
    async with running_gateway(cfg) as g:
        await actions(session, g.admin, 2)
        genuine = events_in(redis_server)
        await wait_until(lambda: mirror.exists() and len(mirror.read_text().splitlines())
                         == len(genuine), 5, what="the mirror to catch up")
        copied = mirror.read_bytes()
        # 1. a forged event appended after the genuine chain (linked, but not keyed)
        redis_server.cmd("XADD", "kgtest:audit", "*", "e", json.dumps(
            seal({"id": "forged", "action": "unkill", "reason": "x"}, genuine[-1]["hash"])))
        await wait_until(lambda: g.gw.metrics.get("killgate_audit_mirror_refused_total") == 1,
                         5, what="the refusal")
        st = g.gw.sync.status()["audit"]["mirror"]
        assert not st["ok"] and "no MAC" in st["refused"]["problem"]
        assert g.gw.metrics.get("killgate_audit_mirror_ok") == 0
        await wait_until(lambda: hook.events(), 5, what="the webhook event")
        sent = hook.events()
        assert [e["event"] for e in sent] == ["killgate.audit.mirror_refused"]
        assert sent[0]["trigger"] == "automatic" and "no MAC" in sent[0]["reason"]
        # 2. the whole stream edited, re-sealed and rewritten; a genuine kill after it
        rewrite(redis_server, resealed([genuine[0], {**genuine[1], "reason": "x"},
                                        *genuine[2:]], 1))
        async with session.post(g.admin + "/v1/kill", headers=H, json={
                "scope": "global", "reason": "after"}) as r:
            assert r.status == 200
        await asyncio.sleep(0.5)  # (several mirror polls: nothing may be appended)
        assert mirror.read_bytes() == copied
    res = await asyncio.to_thread(verify_mirror, mirror)
    assert res.returncode == 0, res.stderr
    # a restarted gateway still refuses: the file's last line is not continued
    async with running_gateway(cfg) as g:
        await wait_until(lambda: g.gw.metrics.get("killgate_audit_mirror_refused_total") == 1,
                         5, what="the refusal after a restart")
        assert mirror.read_bytes() == copied
        # the operator restores the genuine trail (the gateway's own events since continue
        # it) and moves the mirror aside: a new mirror starts and copies it all
        since = events_in(redis_server)[len(genuine):]
        assert since and since[0]["prev_hash"] == genuine[-1]["hash"]
        rewrite(redis_server, [*genuine, *since])
        mirror.rename(tmp_path / "mirror.old.jsonl")
        await wait_until(lambda: g.gw.sync.status()["audit"]["mirror"]["ok"]
                         and mirror.exists() and len(mirror.read_text().splitlines())
                         == len(genuine) + len(since), 5, what="a new mirror")
        assert (await asyncio.to_thread(verify, g.admin, *KEY)).returncode == 0


def test_verify_trail_reports_what_it_could_check() -> None:
    key = ("k1", STATE_KEY.encode())
    a = seal({"id": "a"}, GENESIS)  # written before keyed audit
    b = seal({"id": "b"}, a["hash"], key)
    c = seal({"id": "c"}, b["hash"], key)
    r = verify_trail([a, b, c], c["hash"], {"k1": key[1]})
    assert (r.brk, r.macs, r.unkeyed, r.hashes) == (None, 2, 1, 3)
    assert c["mac"] == audit_mac(key[1], c["hash"])
    r = verify_trail([a, b, c], None, {})
    assert r.brk is None and not r.keyed
    # an unkeyed event after keyed ones: re-sealed (or written) without the key
    d = seal({"id": "d"}, c["hash"])
    r = verify_trail([a, b, c, d], None, {"k1": key[1]})
    assert r.brk is not None and r.brk.index == 3 and "no MAC under a key" in r.brk.problem
    assert r.hashes == 4  # its link and hash were fine
    # no keyed event at all, with a key given: nothing authenticates the trail
    r = verify_trail([a], None, {"k1": key[1]})
    assert r.brk is not None and "newest event carries no MAC" in r.brk.problem
    # a key we do not hold: not checked, and the trail is not authenticated
    r = verify_trail([a, b, c], None, {"other": b"x" * 32})
    assert r.brk is not None and r.macs == 0


def test_a_reseed_after_lost_events_is_reported() -> None:
    """A store restored from an older backup: the re-seed continues the older chain, but
    names the head its instance had anchored, which the trail does not hold."""
    a = seal({"id": "a"}, GENESIS)
    b = seal({"id": "b"}, a["hash"])  # lost with the backup restore
    reseed = seal({"id": "r", "action": "state.reseed", "anchored_head": b["hash"]}, a["hash"])
    r = verify_trail([a, reseed])
    assert r.brk is not None and r.brk.index == 1 and "store lost events" in r.brk.problem
    # the same re-seed with the whole trail (a mirror): fine
    reseed = seal({"id": "r", "action": "state.reseed", "anchored_head": b["hash"]}, b["hash"])
    assert verify_trail([a, b, reseed]).brk is None


def test_a_line_that_is_not_an_audit_event_is_named_as_such(tmp_path: Path) -> None:
    """`audit verify --mirror` of a file that is not a mirror (or holds an overwritten line)
    names what is wrong, not "the store lost the events before it"."""
    a = seal({"id": "a"}, GENESIS)
    r = verify_trail([{"time": "t", "route": "iris"}])
    assert r.brk is not None and r.brk.index == 0
    assert r.brk.problem.startswith("not an audit event (no prev_hash and hash)")
    r = verify_trail([a, {"id": "line-2", "unparseable": "{oops"}])
    assert r.brk is not None and r.brk.index == 1 and r.hashes == 1
    assert r.brk.problem.startswith("not an audit event (not one JSON object)")
    for name, text in (("access.jsonl", '{"time": "t", "route": "iris", "status": 200}\n'),
                       ("garbled.jsonl", json.dumps(a) + "\n{oops\n")):
        path = tmp_path / name
        path.write_text(text)
        res = verify_mirror(path)
        assert res.returncode == 1 and "not an audit event" in res.stderr, res.stderr
        assert "lost" not in res.stderr.split("\n")[0]


def test_verify_with_a_config_that_names_no_key_does_not_send_you_back_to_c(
        tmp_path: Path) -> None:
    """On the demo (a local store, no key), `audit verify` says "give -c FILE"; a new user
    who then gave the demo's config was told to give -c FILE again."""
    cfg = tmp_path / "k.yaml"
    cfg.write_text("state: {backend: local}\nroutes:\n"
                   "  - {name: r, match: {path_prefix: /}, stable: v1,\n"
                   "     versions: [{name: v1, url: 'http://127.0.0.1:9', weight: 1}]}\n")
    mirror = tmp_path / "mirror.jsonl"
    mirror.write_bytes(b"")
    res = cli_fork.run(["audit", "verify", "--mirror", str(mirror), "-c", str(cfg)],
                       {k: v for k, v in os.environ.items()
                        if k not in ("KILLGATE_AUDIT_KEY", "KILLGATE_STATE_KEY")},
                       str(ROOT), 60)
    assert res.returncode == 0, res
    assert "MACs NOT checked" in res.stdout and "give -c FILE" not in res.stdout, res.stdout
    assert f"{cfg} names no audit or signing key" in res.stdout, res.stdout
