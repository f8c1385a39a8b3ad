"""Third-party confinement and layering (STYLE §12-13), checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "gateway"
MODULES = sorted(p for p in PKG.rglob("*.py"))

# third-party import -> the only modules allowed to import it
ALLOWED = {
    "redis": {"state/resp.py"},  # its URL grammar only
    "hiredis": {"state/resp.py"},
    "jwt": {"admin/auth.py"},
    "uvloop": {"server.py"},
    "httptools": {"dataplane/upstream.py", "dataplane/protocol.py"},
    "watchfiles": {"control/reload.py"},
    "opentelemetry": {"telemetry/tracing.py", "telemetry/spanqueue.py", "telemetry/otlpmetrics.py",
                      "telemetry/otelcommon.py"},
    "matplotlib": {"cli/drillplot.py"},
}
# modules allowed to use aiohttp's *client*
CLIENT_USERS = {"control/probes.py", "control/events.py", "control/drillload.py",
                "cli/drill.py"}
CLIENT_NAMES = {"ClientSession", "TCPConnector", "ClientTimeout", "ClientError"}
PURE = {"domain/routing.py", "control/table.py", "domain/statedoc.py", "domain/overrides.py",
        "domain/health.py", "domain/analysis.py", "configfile.py", "domain/stats.py",
        "domain/diff.py", "dataplane/jsonpeek.py", "dataplane/headers.py", "domain/audit.py",
        "dataplane/paths.py", "dataplane/sse.py", "dataplane/attempts.py",
        "dataplane/notready.py", "dataplane/retry.py",
        "telemetry/metrics.py", "errors.py", "config.py", "domain/traffic.py",
        "domain/alerting.py", "telemetry/record.py", "telemetry/requests.py",
        "config_telemetry.py", "domain/drills.py", "domain/drilltoken.py",
        "domain/drillplan.py", "domain/drillreport.py",
        "config_shadow.py", "domain/comparison.py", "domain/compare.py", "domain/compare_json.py",
        "domain/compare_tensors.py", "domain/compare_chat.py", "domain/shadowstats.py",
        "domain/verdict.py"}
IO_MODULES = {"aiohttp", "asyncio", "redis", "socket", "subprocess", "httptools", "jwt"}


def _imports(path: Path) -> list[tuple[str, set[str]]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((a.name, set()) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, {a.name for a in node.names}))
    return out


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_third_party_confinement(path: Path) -> None:
    rel = str(path.relative_to(PKG))
    for module, names in _imports(path):
        top = module.split(".")[0]
        if top in ALLOWED:
            assert rel in ALLOWED[top], f"{rel} imports {module}: only {ALLOWED[top]} may"
        if top == "aiohttp" and names & CLIENT_NAMES:
            assert rel in CLIENT_USERS, f"{rel} uses the aiohttp client ({names & CLIENT_NAMES})"


@pytest.mark.parametrize("name", sorted(PURE))
def test_pure_domain_does_no_io(name: str) -> None:
    for module, _ in _imports(PKG / name):
        assert module.split(".")[0] not in IO_MODULES, f"{name} imports {module}"


def test_every_module_says_what_it_owns() -> None:
    for path in MODULES:
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc) > 40, f"{path.relative_to(PKG)} needs a module docstring"
