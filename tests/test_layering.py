"""Layering (STYLE layout) on the import graph with import-linter, and third-party
confinement (STYLE §12-13) on the source itself."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "gateway"
CONTRACTS = ROOT / ".importlinter"
MODULES = sorted(p for p in PKG.rglob("*.py"))

# third-party import -> the only modules allowed to import it
ALLOWED = {
    "redis": {"state/respurl.py"},  # its URL grammar only
    "hiredis": {"state/resp.py"},
    "jwt": {"admin/auth.py", "admin/tokens.py"},
    "uvloop": {"server.py"},
    "httptools": {"dataplane/exchange.py", "dataplane/protocol.py"},
    "watchfiles": {"control/reload.py"},
    "opentelemetry": {"telemetry/tracing.py", "telemetry/spanqueue.py", "telemetry/otlpmetrics.py",
                      "telemetry/otelcommon.py", "telemetry/requestspans.py",
                      "telemetry/sampledspans.py", "telemetry/otlpconvert.py",
                      "telemetry/adminspans.py"},
    "matplotlib": {"cli/drillplot.py"},
}
# modules allowed to use aiohttp's *client*
CLIENT_USERS = {"control/probeclient.py", "control/events.py", "control/drillload.py",
                "control/drillabort.py", "cli/drill.py"}
CLIENT_NAMES = {"ClientSession", "TCPConnector", "ClientTimeout", "ClientError"}
PURE = {"telemetry/accessline.py", "domain/routing.py", "domain/routetable.py", "domain/bucketing.py",
        "control/table.py", "domain/statedoc.py", "domain/identities.py", "domain/overrides.py",
        "domain/health.py", "domain/analysis.py", "configfile.py", "domain/stats.py",
        "domain/diff.py", "dataplane/jsonpeek.py", "dataplane/headers.py", "domain/audit.py",
        "dataplane/formpeek.py", "dataplane/formparts.py", "dataplane/formscan.py",
        "domain/auditverify.py",
        "dataplane/fieldrules.py", "dataplane/requesthead.py", "dataplane/answerfields.py",
        "dataplane/answerlabels.py",
        "dataplane/paths.py", "dataplane/sse.py", "dataplane/attempts.py", "dataplane/location.py",
        "dataplane/headrules.py",
        "dataplane/notready.py", "dataplane/retry.py", "admin/actions.py",
        "telemetry/metrics.py", "errors.py", "errors_base.py", "errors_store.py",
        "errors_upstream.py", "config.py", "domain/traffic.py",
        "domain/alerting.py", "telemetry/record.py", "telemetry/requests.py",
        "telemetry/requestrows.py",
        "config_telemetry.py", "telemetry/otlpwire.py", "domain/drills.py", "domain/drilltoken.py",
        "domain/drillplan.py", "domain/drillreport.py", "domain/auditpage.py",
        "domain/drillverdict.py", "domain/drillsummary.py", "config_checks.py", "config_problems.py",
        "config_shadow.py", "config_types.py", "config_admin.py", "config_routes.py", "config_match.py",
        "domain/comparison.py", "domain/compare.py", "domain/compare_json.py",
        "domain/compare_tensors.py", "domain/compare_chat.py", "domain/shadowstats.py",
        "domain/shadowreport.py",
        "domain/promotiongate.py",
        "domain/verdict.py", "domain/tablebuild.py", "domain/kills.py", "state/holder.py",
        "tokenbucket.py", "config_yaml.py", "config_secretnames.py", "tokenhint.py",
        "config_jsonpaths.py", "config_analysis.py", "domain/configrecord.py", "domain/target.py"}
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


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the `gateway` package found first under `root`."""
    code = ("import sys, gateway; from importlinter.cli import lint_imports; "
            f"assert gateway.__file__.startswith({str(root)!r}), gateway.__file__; "
            f"sys.exit(lint_imports(config_filename={str(CONTRACTS)!r}, no_cache=True, "
            "no_logo=True))")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=root, env=env, timeout=120)


def test_import_layers_hold() -> None:
    res = _lint_imports(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("dataplane/bodies.py", "import gateway.state.sync", "The data plane reads"),
    ("domain/routing.py", "import asyncio", "The domain is pure"),
    ("admin/status.py", "from gateway.app import Gateway", "Layers"),
    ("config.py", "import gateway.domain.audit", "Layers"),
    ("state/sync.py", "import gateway.control.table", "Layers"),  # state is below control
    ("control/rollout.py", "import gateway.dataplane.proxy", "Layers"),  # independent parts
    # the data plane's circles, back (a TYPE_CHECKING import counts as much as any other)
    ("dataplane/exchange.py", "import gateway.dataplane.upstream", "Data-plane modules"),
    ("dataplane/slowpath.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from gateway.dataplane.flight import Flight",
     "Data-plane modules"),
    ("dataplane/streaming.py", "import gateway.dataplane.slowpath", "Data-plane modules"),
    ("dataplane/flight.py", "import gateway.dataplane.proxy", "Data-plane modules"),
    ("dataplane/moves.py", "import gateway.dataplane.flight", "Data-plane modules"),
    ("dataplane/finish.py", "import gateway.dataplane.proxy", "Data-plane modules"),
    ("dataplane/request.py", "import gateway.dataplane.protocol", "Data-plane modules"),
    ("dataplane/headers.py", "import gateway.dataplane.sse", "Data-plane modules"),  # siblings
    ("dataplane/newpart.py", '"""A module the layers do not place yet."""',
     "Data-plane modules"),  # exhaustive
])
def test_the_layer_check_can_fail(tmp_path: Path, module: str, line: str,
                                  contract: str) -> None:
    """The same contracts over a copy of the package with one forbidden import added."""
    shutil.copytree(PKG, tmp_path / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "gateway" / module, "a") as f:
        f.write(f"\n{line}  # noqa\n")
    res = _lint_imports(tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    broken = res.stdout.split("Broken contracts", 1)[1]
    assert contract in broken, res.stdout
