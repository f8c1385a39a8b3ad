"""A drill opened through an instance that gives no keys for /readyz proofs, in a fleet on
redis (which always has a state signing key), says so (control/drillfleet.py `no_keys`).

During a rolling upgrade the admin address may reach an instance older than the proofs: it
opens the drill without `readyz_keys`, and every answer after the restore is taken at its
word (`restore_check.proof: "unproven"`), silently, while the report's summary said "the
fleet has no state signing key": wrong, and no hint of what to do. Real gateways (one on a
real redis, one on the local store) show the running config the drill reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.control.drillfleet import no_keys
from gateway.control.drillload import AdminClient
from gateway.domain.drillsummary import markdown
from tests.backends import echo_app
from tests.conftest import RedisServer, admin_token, running_gateway, write_config
from tests.drillrig import routes
from tests.test_revops_fleet import _state

pytestmark = pytest.mark.timeout(30)


async def _state_of(cfg: Path, session: ClientSession) -> tuple[dict[str, object], str]:
    async with running_gateway(cfg, "inst-a") as g:
        api = AdminClient(session, g.admin, admin_token("killgate:read"))
        return (await api.call("GET", "/v1/config"))["config"]["state"], g.admin


async def test_a_redis_fleets_drill_without_keys_is_warned_of(
        tmp_path: Path, backends, redis_server: RedisServer, session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    (tmp_path / "r").mkdir()
    (tmp_path / "l").mkdir()
    on_redis, admin = await _state_of(
        write_config(tmp_path / "r", routes(p1, p2), state=_state(redis_server, tmp_path / "r")),
        session)
    local, _ = await _state_of(write_config(tmp_path / "l", routes(p1, p2)), session)
    why = no_keys({}, on_redis, admin)
    assert why is not None and why.startswith("WARNING: the instance that opened the drill"), why
    assert admin in why and "older than the proofs" in why and "--admin" in why, why
    assert no_keys({"k1": "00" * 32}, on_redis, admin) is None  # (keys given: checked)
    assert no_keys({}, local, admin) is None  # (a local store: no key to prove with)


def test_the_summary_does_not_claim_the_fleet_has_no_key() -> None:
    from gateway.control.drillbehind import Behind
    from tests.test_drillreport import MARKS, analyse, kill_plan, killed_at, timeline

    plan = kill_plan()
    m = analyse(plan, None, timeline("a", 4.0, killed_at(1.2)), MARKS)
    report = {"id": "d-1", "kind": "kill", "verdict": "passed", "reasons": [], "route": "r",
              "version": "v2", "started": "s", "finished": "f", "restored": True,
              "rate": 10, "targets": plan.targets.model_dump(), **m,
              "restore_check": Behind(unproven=["b"], proof="unproven").check()}
    text = markdown(report)
    assert "the fleet has no state signing key" not in text, text
    assert "opened the drill is older than the proofs" in text, text
