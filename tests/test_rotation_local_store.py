"""The key rotation's steps with a `local` store (found by review revrot4): a step 2 that
made no write left the state file signed with the old key (only a redis store's step-2
instances re-signed it), so at step 3 the instance refused its own store's document as
signed with an unknown key: counted as tampering and re-seeded from its snapshot, or,
without one, not ready (503) and told its key was not "the fleet's". A step-2 instance now
re-signs it as it reads it: an audited `state.reseed` ("key rotation step 2"). A local
store's file is shared only by this host's processes: no step-1 instance of a fleet to
sign it back.

Real gateways (the code of `killgate serve`) on one state file through three restarts.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.state.signing import Key
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.rotationrig import B_ENV, KEY_B
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(40)

A, B = "signing_key_env: KILLGATE_TEST_STATE_KEY", "signing_key_env: KG_KEY_B"
PREVIOUS_A = "previous_signing_key_env: KILLGATE_TEST_STATE_KEY"


@pytest.mark.parametrize("snapshot", [True, False], ids=["snapshot", "no-snapshot"])
async def test_a_local_stores_file_is_re_signed_at_step_2(
        snapshot: bool, tmp_path: Path, backends, session,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(B_ENV, KEY_B)
    p = await backends(echo_app("v1"))
    made = iter(range(10))
    stored = tmp_path / "store.json"

    def cfg(*keys: str) -> Path:
        folder = tmp_path / f"c{next(made)}"
        folder.mkdir()
        snap = f"snapshot_path: {tmp_path}/snapshot.json\n" if snapshot else ""
        state = "state:\n" + textwrap.indent(
            f"backend: local\npath: {stored}\n{snap}poll_interval: 50ms\n"
            + "\n".join(keys) + "\n", "  ")
        return write_config(folder, two_versions(p, p, 100, 0), state=state)

    def signer() -> str:
        return stored.read_bytes().split(b" ", 2)[1].decode()

    async with running_gateway(cfg(A), "gw-a") as g:
        await kill(session, g.admin, scope="route", route="iris")
    async with running_gateway(cfg(A, "previous_signing_key_env: KG_KEY_B"), "gw-1") as g:
        await wait_until(lambda: g.gw.sync.synced_once, 5, what="step 1 synced")
    async with running_gateway(cfg(B, PREVIOUS_A), "gw-2") as g:  # step 2: no write
        await wait_until(lambda: g.gw.sync.synced_once, 5, what="step 2 synced")
        await wait_until(lambda: signer() == Key.of(KEY_B.encode()).kid, 5,
                         what="the state file re-signed with the new key")
        _, page, _ = await g.gw.sync.store.audit_newest(1)
        assert page[0]["action"] == "state.reseed" and "step 2" in page[0]["reason"], page
    async with running_gateway(cfg(B), "gw-3") as g:  # step 3
        sync = g.gw.sync
        await wait_until(lambda: sync.synced_once, 5, what="step 3 synced")
        assert sync.ready and "route:iris" in sync.holder.doc.kills
        ver = sync.status()["verification"]
        assert ver["unverified_total"] == 0, ver
        async with session.get(g.admin + "/readyz") as r:
            assert r.status == 200
