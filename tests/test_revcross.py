"""A second hostile read of the day's merged reviews (revcross). Each failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.test_cli import acli
from tests.test_killswitch import token

pytestmark = pytest.mark.timeout(90)


async def test_drill_restore_errors_are_json_on_stdout(tmp_path: Path, backends) -> None:
    """`--json` gives `{"error": ...}` on stdout on every failure (README); `killgate drill
    restore` printed nothing there (its message on stderr only), so a runbook step that
    restores a drill and reads the JSON got nothing to parse when the id was wrong or the
    token could not restore."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        for tok, said in ((token("killgate:admin"), "no drill nope"),
                          (token("killgate:read"), "403")):
            env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": tok}
            res = await acli("--json", "drill", "restore", "nope", env=env)
            assert res.returncode == 1, (res.stdout, res.stderr)
            assert said in res.stderr, res.stderr
            err = json.loads(res.stdout)["error"]
            assert err["exit"] == 1 and said in err["message"], err


async def test_a_gzip_write_retried_with_its_key_is_answered_as_the_first(tmp_path: Path,
                                                                            backends) -> None:
    """A write retried with its Idempotency-Key gets the first one's answer (README). Since
    the admin listener stopped decoding bodies (auto_decompress off), the key's fingerprint
    was taken over the bytes as sent: gzip puts its time in its header, so the same kill
    gzipped again a second later (Python's gzip.compress, any client compressing afresh)
    was refused 409 idempotency_key_reused 'used for a different request'. The
    fingerprint is the decoded body's again; a different body is still refused."""
    import gzip

    from aiohttp import ClientSession

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    body = json.dumps({"scope": "version", "route": "iris", "version": "v2",
                       "reason": "bad v2"}).encode()
    headers = {"Authorization": f"Bearer {token('killgate:admin')}",
               "Content-Type": "application/json", "Content-Encoding": "gzip",
               "Idempotency-Key": "k-1"}
    async with running_gateway(cfg) as g, ClientSession() as s:
        answers = []
        for mtime in (1, 2):
            async with s.post(g.admin + "/v1/kill", headers=headers,
                              data=gzip.compress(body, mtime=mtime)) as r:
                answers.append((r.status, await r.json()))
        assert answers[0][0] == 200 and answers[1] == answers[0], answers
        other = gzip.compress(body.replace(b"bad v2", b"worse"), mtime=3)
        async with s.post(g.admin + "/v1/kill", headers=headers, data=other) as r:
            assert r.status == 409, await r.text()
            assert (await r.json())["error"]["type"] == "idempotency_key_reused"
