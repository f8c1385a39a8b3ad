"""`killgate audit verify --strict`: an intact trail that could not be checked whole (no
key for its MACs, no head anchored by the gateway) exits 3, so a runbook or a cron job
cannot take a partial check for a proof; without --strict it exits 0 and says what it
could not check, as before."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gateway.domain.audit import GENESIS, audit_mac, event_hash
from gateway.state.signing import Key
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(30)

KEY = "k" * 48


def _mirror(tmp_path: Path, keyed: bool) -> Path:
    events, prev = [], GENESIS
    for i in range(3):
        ev = {"id": f"{i:032x}", "time": "2026-12-05T00:00:00.000Z", "actor": "ops",
              "action": "kill", "target": {}, "reason": "x", "prev_hash": prev}
        if keyed:
            ev["kid"] = Key.of(KEY.encode()).kid
        ev["hash"] = prev = event_hash(ev)
        if keyed:
            ev["mac"] = audit_mac(KEY.encode(), ev["hash"])
        events.append(ev)
    path = tmp_path / "mirror.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


async def test_strict_refuses_a_trail_whose_macs_could_not_be_checked(tmp_path: Path) -> None:
    mirror = _mirror(tmp_path, keyed=True)
    plain = await acli("audit", "verify", "--mirror", str(mirror))
    assert plain.returncode == 0 and "MACs NOT checked" in plain.stdout, plain
    strict = await acli("audit", "verify", "--mirror", str(mirror), "--strict")
    assert strict.returncode == 3, strict
    assert "--strict" in strict.stderr and "no audit key" in strict.stderr, strict.stderr
    as_json = await acli("audit", "verify", "--mirror", str(mirror), "--strict", "--json")
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["unchecked"] == ["MACs not checked (no audit key)"]


async def test_strict_passes_a_mirror_checked_with_its_key(tmp_path: Path) -> None:
    mirror = _mirror(tmp_path, keyed=True)
    res = await acli("audit", "verify", "--mirror", str(mirror), "--strict",
                     "--key-env", "KG_TEST_AUDIT_KEY", env={"KG_TEST_AUDIT_KEY": KEY})
    assert res.returncode == 0 and "MACs checked: 3" in res.stdout, res


async def test_strict_refuses_a_mirror_that_holds_no_event(tmp_path: Path) -> None:
    """A mirror cut to nothing (its end is anchored by nothing) was 'ok: 0 event(s)', exit
    0 under --strict too, with the key given: a cron job took an emptied file for a proof."""
    mirror = tmp_path / "mirror.jsonl"
    mirror.write_text("")
    res = await acli("audit", "verify", "--mirror", str(mirror), "--strict",
                     "--key-env", "KG_TEST_AUDIT_KEY", env={"KG_TEST_AUDIT_KEY": KEY})
    assert res.returncode == 3 and "holds no event" in res.stderr, res


def _args(**kw: object) -> argparse.Namespace:
    base = {"mirror": None, "key_config": None, "key_env": ["KG_TEST_AUDIT_KEY"],
            "key_file": [], "strict": True, "json": False}
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize(("anchored", "code"), [(True, 0), (False, 3)])
def test_strict_refuses_a_chain_whose_head_the_gateway_did_not_anchor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        anchored: bool, code: int) -> None:
    """The chain as GET /v1/audit gives it (`fetch`: events and head), MACs checked: without
    an anchored head, events cut off its end would not be seen."""
    from gateway.cli.auditverify import verify

    monkeypatch.setenv("KG_TEST_AUDIT_KEY", KEY)
    events = [json.loads(line) for line in _mirror(tmp_path, keyed=True).read_text().splitlines()]
    head = events[-1]["hash"] if anchored else None
    assert verify(_args(), lambda _args: (events, head)) == code
    err = capsys.readouterr().err
    assert ("no anchored head" in err) is (not anchored), err
