"""`killgate check` notes an OTLP endpoint on port 4317 (OTLP/gRPC's): killgate exports
OTLP over HTTP/protobuf (4318), so every export there fails, and that showed only later,
as dropped spans. Found by the new-user review (revnewuser2): `otlp_endpoint:
http://127.0.0.1:4317`, the port a collector's docs name first, passed `check` silently.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import two_versions, write_config
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("port, noted", [(4317, True), (4318, False)])
async def test_an_otlp_grpc_port_is_noted(tmp_path: Path, port: int, noted: bool) -> None:
    cfg = write_config(tmp_path, two_versions(1, 2),
                       extra=f"telemetry: {{otlp_endpoint: 'http://127.0.0.1:{port}'}}\n")
    res = await acli("check", str(cfg))
    assert res.returncode == 0 and f"{cfg}: ok" in res.stdout, res  # a note, not an error
    said = ("note: telemetry.otlp_endpoint 'http://127.0.0.1:4317' names port 4317, "
            "OTLP/gRPC's" in res.stderr)
    assert said == noted, res.stderr
    if noted:
        assert "4318" in res.stderr, res.stderr
