"""The admin API's OpenAPI document, checked against the live API by schemathesis."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path

import pytest

from gateway.admin.limiter import TokenBucket
from tests.backends import echo_app
from tests.conftest import admin_token, running_gateway, two_versions, write_config

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,response_headers_conformance")


async def _schemathesis(tmp: Path, url: str, header: str | None,
                        *more: str) -> tuple[int, str]:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("schemathesis is not installed (pip install -e '.[test]')")
    args = [exe, "run", url, "--checks", CHECKS, "--seed", "7",
            "--request-timeout", "10", "--warnings", "off", *more]
    if header:
        args += ["-H", header]
    proc = await asyncio.create_subprocess_exec(*args, cwd=str(tmp),
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 150)
    return proc.returncode or 0, out.decode(errors="replace")


def _every_operation_tested(out: str) -> None:
    """The run's summary: every operation selected was tested (none skipped for want of
    cases: fewer examples per operation must still reach each one)."""
    selected = re.search(r"Selected: (\d+)/(\d+)", out)
    tested = re.search(r"Tested: (\d+)", out)
    assert selected and tested and selected[1] == selected[2] == tested[1], out[-4000:]
    assert "Skipped:" not in out.split("API Operations:")[-1].split("Test Phases:")[0], out[-4000:]


@pytest.mark.timeout(240)
async def test_schemathesis_with_and_without_a_token(tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    # (alerts enabled: the Alertmanager webhook is fuzzed too)
    cfg = write_config(tmp_path, two_versions(p, p), extra="alerts:\n  alertmanager: {}\n")
    async with running_gateway(cfg) as g:
        g.gw.admin_api.callers.limiter = TokenBucket(1e9, 10**9)  # fuzzing is not brute force
        url = g.admin + "/openapi.json"
        tok = admin_token("killgate:admin", "fuzz", 3600)
        # every phase: the coverage phase's boundary and negative cases (~1,300 of them,
        # every operation's, whatever -n says), then up to 4 fuzzed cases per operation
        # (-n 12, then 8 before: each fuzzed case costs schemathesis ~25 ms of hypothesis'
        # strategies, 8 -> 4 about 80 cases and 1-2 s of CPU; the systematic cases are the
        # coverage phase's), and the stateful phase
        rc, out = await _schemathesis(tmp_path, url, f"Authorization: Bearer {tok}", "-n", "4")
        assert rc == 0, out[-4000:]
        _every_operation_tested(out)
        assert " passed" in out and "failed" not in out.split("Test cases:")[-1].split("\n")[1]
        # without a token: every operation, fuzzed (valid and invalid cases), answers as
        # documented. (Not the coverage phase again: its ~1,300 boundary cases, 5-8 s, are
        # run with the token above. Without one, every operation but the five public ones
        # is refused before its input is read, and those five take no token: 2 cases per
        # operation, ~50 in all, prove each refusal as 6 did (~150 cases, 3-4 s of CPU))
        rc, out = await _schemathesis(tmp_path, url, None, "-n", "2", "--phases", "fuzzing")
        assert rc == 0, out[-4000:]
        _every_operation_tested(out)
        assert " passed" in out, out[-4000:]


async def test_document_lists_every_route_with_its_scope(tmp_path: Path, backends,
                                                         session) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g, session.get(g.admin + "/openapi.json") as r:
        doc = await r.json()
    assert doc["openapi"].startswith("3.1")
    ops = {(m.upper(), path): op for path, item in doc["paths"].items()
           for m, op in item.items()}
    for key in (("POST", "/v1/kill"), ("POST", "/v1/unkill"), ("GET", "/v1/status"),
                ("GET", "/v1/audit"), ("POST", "/v1/routes/{route}/rollback"),
                ("POST", "/v1/routes/{route}/promote"), ("PUT", "/v1/routes/{route}/weights"),
                ("POST", "/v1/routes/{route}/release"), ("GET", "/v1/drills"),
                ("POST", "/v1/drills"), ("POST", "/v1/drills/{drill}/inject"),
                ("POST", "/v1/drills/{drill}/restore"), ("POST", "/v1/drills/{drill}/end"),
                ("POST", "/v1/audit/trim")):
        assert ops[key]["security"] == [{"bearer": []}]
        assert ops[key]["x-scope"].startswith("killgate:")
        assert {"401", "403"} <= set(ops[key]["responses"])
    assert ops[("POST", "/v1/routes/{route}/rollback")]["parameters"][0]["schema"]["enum"] == [
        "iris"]
