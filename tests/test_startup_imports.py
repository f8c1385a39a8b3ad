"""What a `killgate serve` start imports: only what serving with its config needs.

Every start (each worker of a group, each restart) pays for what it imports, ~0.8 s of CPU
in all; the OpenTelemetry SDK (its metrics side alone is ~300 modules' worth of work) and the
client commands' modules (`status`, `drill`, ... : aiohttp's client, the drill runner) were
imported by every start. A real process runs the serve path (`killgate serve -c FILE` as
`python -m gateway` runs it) until /readyz answers, and then reports its `sys.modules`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, write_config

#: runs `killgate serve -c FILE` in this process; a thread prints the modules once ready
_PROBE = r"""
import json, os, sys, threading, time, urllib.request
admin, config = sys.argv[1], sys.argv[2]

def watch():
    deadline = time.monotonic() + 50
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(admin + "/readyz", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.01)
    else:
        print(json.dumps({"ready": False}), flush=True)
        os._exit(1)
    print(json.dumps({"ready": True, "modules": sorted(sys.modules)}), flush=True)
    os._exit(0)

threading.Thread(target=watch, daemon=True).start()
sys.argv = ["killgate", "serve", "-c", config]
import runpy
runpy.run_module("gateway", run_name="__main__")
"""

ROUTES = """\
- name: iris
  match: {path_prefix: /v2/models/iris}
  stable: v1
  versions:
    - {name: v1, url: "http://127.0.0.1:9", weight: 100}
"""


def _served_modules(tmp_path: Path, extra: str = "") -> set[str]:
    admin = free_port()
    cfg = write_config(tmp_path, ROUTES, admin=f"127.0.0.1:{admin}", extra=extra)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    res = subprocess.run([sys.executable, "-c", _PROBE, f"http://127.0.0.1:{admin}", str(cfg)],
                         capture_output=True, text=True, timeout=60, cwd=str(ROOT), env=env)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    assert res.returncode == 0 and lines, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    out = json.loads(lines[-1])
    assert out["ready"]
    return set(out["modules"])


def _under(modules: set[str], *packages: str) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


@pytest.mark.timeout(120)
def test_serve_without_an_exporter_imports_no_opentelemetry_sdk_and_no_client_commands(
        tmp_path: Path) -> None:
    mods = _served_modules(tmp_path)
    assert "gateway.startup" in mods and "gateway.dataplane.protocol" in mods  # (it served)
    assert _under(mods, "opentelemetry.sdk", "opentelemetry.exporter") == []
    # the client commands (`status`, `kill`, `drill`, `shadow report`, ...) are not serving's
    assert _under(mods, "gateway.cli.admin", "gateway.cli.client", "gateway.cli.drill",
                  "gateway.cli.shadow", "gateway.control.drills") == []


@pytest.mark.timeout(120)
def test_serve_with_an_exporter_imports_the_sdk(tmp_path: Path) -> None:
    """The other side: with an OTLP endpoint configured the SDK and exporter are there (the
    check above can see them)."""
    mods = _served_modules(tmp_path, extra="telemetry:\n  otlp_endpoint: http://127.0.0.1:9\n")
    assert "opentelemetry.sdk.trace" in mods and "opentelemetry.sdk.metrics" in mods
    assert _under(mods, "opentelemetry.exporter.otlp.proto.http")
