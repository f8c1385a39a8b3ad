"""The cause of a refused store value (`by_cause` in /v1/status, the `cause` of each
`state_unverified` log line) is a field of the Unverified the signing code raises, carried
with the refusal: it was read back from the message's wording, so rewording a message in
signing.py silently moved its refusals to "other". Each kind of refusal, from real files
and a real redis-server, lands under its cause."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.state.signing import CAUSES, Key, Keyring, Unverified, cause_of
from gateway.state.tamper import TamperLog
from gateway.telemetry.metrics import Metrics
from tests.conftest import STATE_KEY, RedisServer

pytestmark = pytest.mark.timeout(20)

OURS = Keyring(Key.of(STATE_KEY.encode()))
THEIRS = Keyring(Key.of(b"another-deployments-key-0123456789-abcdef"))
BODY = json.dumps({"generation": 3, "kills": {}}).encode()

#: the causes counted as tampering (`retired`, a retired key's left-over, is counted apart)
TAMPER = [c for c in CAUSES if c != "retired"]


def _forgeries(keys: Keyring, kind: bytes) -> dict[str, bytes]:
    """A stored value of `kind` refused for each cause."""
    sealed = keys.seal(kind, BODY)
    return {"unsigned": BODY,
            "bad_signature": sealed.replace(b'"generation": 3', b'"generation": 4'),
            "unknown_key_id": THEIRS.seal(kind, BODY),
            "other": sealed.partition(b" ")[0] + b" 0badc0de\n" + BODY}  # (malformed)


def test_each_refusal_raised_by_the_keyring_names_its_cause() -> None:
    for cause, raw in _forgeries(OURS, b"state").items():
        with pytest.raises(Unverified) as got:
            OURS.open(b"state", raw)
        assert cause_of(got.value) == cause, (cause, str(got.value))
    assert cause_of(ValueError("not JSON")) == "other"
    # the cause is the exception's, whatever its message says
    assert cause_of(Unverified("reworded: the MAC is wrong", "bad_signature")) == "bad_signature"
    t = TamperLog(Metrics())
    t.note("push", "reworded: the MAC is wrong", "bad_signature")
    t.note("push", "reworded", "no such cause")  # type: ignore[arg-type]
    assert t.status()["by_cause"] == {"bad_signature": 1, "other": 1}


async def test_a_refused_local_state_file_carries_its_cause(tmp_path: Path) -> None:
    from gateway.state.local import LocalStore

    store = LocalStore(tmp_path / "s.json", keys=OURS)
    await store.open()
    t = TamperLog(Metrics())
    for cause, raw in _forgeries(OURS, b"state").items():
        store.path.write_bytes(raw)
        got = await store.load()
        assert got.doc is None and got.problem and got.cause == cause, (cause, got.problem)
        t.note("state", got.problem, got.cause)  # (as reseed.py's _judge does)
    assert t.status()["by_cause"] == dict.fromkeys(TAMPER, 1)


async def test_refused_redis_values_reach_the_tally_under_their_cause(
        redis_server: RedisServer) -> None:
    """Idempotency records, a state document and heartbeats forged by raw commands, each
    refusal reported (through the store's `on_unverified`, as the gateway wires it) under
    its cause."""
    from gateway.state.redis import RedisStore

    t = TamperLog(Metrics())

    def report(kind: str, problem: str, which: str | None, cause: str = "other") -> None:
        assert which is None
        t.note(kind, problem, cause)  # type: ignore[arg-type]

    store = RedisStore(redis_server.url, "kgcause", 1.0, keys=OURS, on_unverified=report)
    await store.open()
    try:
        bound = OURS.bound("kgcause")
        for raw in _forgeries(bound, b"idem:k1").values():
            redis_server.cmd("SET", "kgcause:idem:k1", raw.decode())
            await store.idem_claim("k1", {"holder": "x"}, 30)  # (refused: as if absent)
        assert t.status()["by_cause"] == dict.fromkeys(TAMPER, 1), t.status()
        mac = "0" * 64
        kid = OURS.current.kid  # type: ignore[union-attr]
        for forged in (f"{kid} {mac} 5 1 - pod-9", f"0badc0de {mac} 5 1 - pod-9"):
            now = next(p for p in redis_server.cmd("TIME").split("\r\n") if p.isdigit())
            redis_server.cmd("HSET", "kgcause:instances", "pod-9", f"{now}000 {forged}")
            await store.fleet(5.0)
        assert t.status()["by_cause"] == {"bad_signature": 2, "unsigned": 1,
                                          "unknown_key_id": 2, "other": 1}, t.status()
    finally:
        await store.close()
