"""Refused admin calls in the log (admin/callers.py): logged with the caller's address,
but a flood cannot multiply the lines.

A call without a token (or with one that is not even shaped like a JWT) is refused before
the token-check budget is consulted, at no cost: every one wrote a WARNING line, so anyone
who reached the admin port could write thousands of log lines a second, burying the events
an operator looks for and filling the disk or the log pipeline."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiohttp import ClientSession, TCPConnector

from tests.backends import echo_app
from tests.conftest import bearer, serving_process, two_versions, wait_until

FLOOD = 2000


async def test_a_flood_of_refused_calls_writes_a_bounded_number_of_lines(
        tmp_path: Path, backends, gateway_procs) -> None:
    p = await backends(echo_app("v1"))
    gw, _ = await serving_process(gateway_procs, tmp_path, two_versions(p, p))
    headers = [{}, {"Authorization": "Basic b3BzOnB3"}, {"Authorization": "Bearer nodots"}]
    async with ClientSession(connector=TCPConnector(limit=8)) as s:
        async def call(i: int) -> int:
            async with s.get(gw.admin + "/v1/status", headers=headers[i % 3]) as r:
                return r.status

        codes = await asyncio.gather(*(call(i) for i in range(FLOOD)))
        assert set(codes) == {401}
        async with s.get(gw.admin + "/v1/status", headers=bearer("killgate:read")) as r:
            assert r.status == 200  # (also: every line the flood caused is written by now)
        lines = _denied(gw.output())
        assert lines and 'peer="127.0.0.1"' in lines[0]  # the first ones are logged as before
        assert len(lines) <= 50, f"{len(lines)} log lines for {FLOOD} refused calls"
        # what was not logged is said by the next line written (here: once the budget
        # allows one again), so the log still tells how big the flood was
        sent = [FLOOD]

        async def accounted() -> bool:
            sent[0] += await call(0) == 401
            got = _denied(gw.output())
            return len(got) + sum(int(m) for ln in got
                                  for m in re.findall(r"unlogged=(\d+)", ln)) == sent[0]

        await wait_until(accounted, 10, 0.25, "every refusal to be logged or counted")
    assert gw.stop() == 0


def _denied(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if "admin_denied" in ln]


async def test_a_write_refused_as_prepared_by_another_principal_is_logged(
        tmp_path: Path, backends, gateway_procs) -> None:
    """A 409 principal_changed (X-Killgate-Subject names someone other than the signed-in
    principal: a proxy's session that changed under an open dialog) is a refusal an
    operator must be able to find: it is logged as admin_denied with who was signed in and
    who prepared the request (found by review of the impconsole2 merge: it left no trace)."""
    p = await backends(echo_app("v1"))
    gw, _ = await serving_process(gateway_procs, tmp_path, two_versions(p, p))
    body = {"scope": "route", "route": "iris", "reason": "INC-7 alice's reason"}
    async with ClientSession() as s:
        headers = {**bearer("killgate:admin", sub="dave"), "X-Killgate-Subject": "alice"}
        async with s.post(gw.admin + "/v1/kill", json=body, headers=headers) as r:
            assert r.status == 409, await r.text()
            assert (await r.json())["error"]["type"] == "principal_changed"
        async with s.get(gw.admin + "/v1/status", headers=bearer("killgate:read")) as r:
            assert r.status == 200 and not (await r.json())["kills"]

    async def logged() -> bool:
        return any("principal_changed" in ln for ln in _denied(gw.output()))

    await wait_until(logged, 5, 0.1, "the principal_changed refusal to be logged")
    line = next(ln for ln in _denied(gw.output()) if "principal_changed" in ln)
    assert 'subject="dave"' in line and 'expected="alice"' in line and "/v1/kill" in line, line
    assert gw.stop() == 0
