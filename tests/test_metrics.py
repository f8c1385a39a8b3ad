"""telemetry/metrics.py: families typed and described, the library's exposition, negotiation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families

from gateway.telemetry.metrics import HELP, INITIAL, Metrics
from tests.conftest import running_gateway, two_versions, write_config

PKG = Path(__file__).resolve().parent.parent / "gateway"


def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_every_series_counted_in_the_source_is_described() -> None:
    """A `killgate_*` name used anywhere in gateway/ has a type and a help text here."""
    used: set[str] = set()
    for path in PKG.rglob("*.py"):
        used |= set(re.findall(r'\.(?:inc|set)\(\s*"(killgate_[a-z0-9_]+)"', path.read_text()))
    assert {"killgate_requests_shed_total", "killgate_state_stale"} <= used  # (the scan works)
    undocumented = sorted(used - set(HELP))
    assert not undocumented, f"add these to telemetry/metricnames.py HELP: {undocumented}"


def test_families_are_typed_and_parse_with_the_library() -> None:
    m = Metrics()
    m.inc("killgate_requests_shed_total")
    m.inc("killgate_upstream_errors_total", ("iris", "v1", "connect"), 2,
          label_names=("route", "version", "kind"))
    m.set("killgate_upstream_health", 1, ("iris", "v1"), ("route", "version"))
    m.inc("killgate_something_new_total")  # not described: typed from its name all the same
    fams = _families(m.render())
    assert fams["killgate_requests_shed"].type == "counter"  # type: ignore[attr-defined]
    assert fams["killgate_upstream_health"].type == "gauge"  # type: ignore[attr-defined]
    assert fams["killgate_something_new"].type == "counter"  # type: ignore[attr-defined]
    sample = fams["killgate_upstream_errors"].samples[0]  # type: ignore[attr-defined]
    assert sample.labels == {"route": "iris", "version": "v1", "kind": "connect"}
    assert sample.value == 2
    assert "untyped" not in m.render()


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.set("killgate_upstream_health", 1, ('a"b\\c\nd', "v"), ("route", "version"))
    (fam,) = (f for f in text_string_to_metric_families(m.render())
              if f.name == "killgate_upstream_health")
    assert fam.samples[0].labels["route"] == 'a"b\\c\nd'


@pytest.mark.parametrize("accept,ctype", [
    (None, "text/plain; version=0.0.4"),
    ("text/plain", "text/plain; version=0.0.4"),
    ("application/openmetrics-text; version=1.0.0", "application/openmetrics-text"),
    ("application/openmetrics-text;version=abc", "text/plain; version=0.0.4"),  # malformed
    (";;,,=", "text/plain; version=0.0.4"),
    ("x" * 5000, "text/plain; version=0.0.4"),
])
def test_negotiation(accept: str | None, ctype: str) -> None:
    m = Metrics()
    m.inc("killgate_requests_shed_total", by=3)
    body, got = m.exposition(accept)
    assert got.startswith(ctype)
    text = body.decode()
    if ctype.startswith("application/openmetrics"):
        (fam,) = (f for f in om_parse(text) if f.name == "killgate_requests_shed")
        assert fam.type == "counter" and fam.samples[0].value == 3
        assert text.endswith("# EOF\n")
    else:
        assert _families(text)["killgate_requests_shed"].samples[0].value == 3  # type: ignore[attr-defined]


async def test_admin_metrics_endpoint_negotiates(tmp_path: Path, backends, session) -> None:
    from tests.backends import echo_app

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0))
    async with running_gateway(cfg) as g:
        async with session.get(g.admin + "/metrics") as r:
            assert r.status == 200
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            fams = list(text_string_to_metric_families(await r.text()))
        assert fams and all(f.type in ("counter", "gauge", "histogram") for f in fams)
        async with session.get(g.admin + "/metrics", headers={
                "Accept": "application/openmetrics-text; version=1.0.0"}) as r:
            assert r.headers["content-type"].startswith("application/openmetrics-text")
            assert {f.name for f in om_parse(await r.text())} >= {"killgate_state_generation"}


async def test_the_series_alerts_watch_are_there_at_zero_from_the_start(
        tmp_path: Path, backends, session) -> None:
    """A counter that first appeared at 1 hid its first increase from Prometheus
    (`increase()` needs two samples): the audit mirror's first failure, the first forged
    document, the first re-seed went unseen by the shipped alerts (reviews of 2026-12-04)."""
    from tests.backends import echo_app

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0))
    async with running_gateway(cfg) as g, session.get(g.admin + "/metrics") as r:
        text = await r.text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    for name, (label_names, series) in INITIAL.items():
        sample = name.removesuffix("_total") + ("_total" if name.endswith("_total") else "")
        for labels in series:
            key = (sample, tuple(sorted(zip(label_names, labels, strict=True))))
            assert samples.get(key) == 0.0, key
    assert ("killgate_state_unverified_total", (("kind", "push"),)) in samples
    assert ("killgate_audit_mirror_failures_total", ()) in samples


def test_every_kind_of_unverified_value_starts_at_zero() -> None:
    """(final review of cab0ef4) INITIAL listed the kinds by hand and missed "snapshot"
    (a forged or unreadable snapshot file): its first refusal still hid from increase()."""
    from gateway.state.tamper import KINDS

    label_names, series = INITIAL["killgate_state_unverified_total"]
    assert label_names == ("kind",)
    assert {k for (k,) in series} >= set(KINDS)


async def test_a_version_removed_by_a_reload_leaves_the_health_series(
        tmp_path: Path, backends, session) -> None:
    """killgate_upstream_health of a version the config no longer has stayed at its last
    value until the process ended: a version removed while unhealthy read 0 forever (an
    alert on it never resolved, and with --workers N the group's minimum kept it at 0)."""
    import textwrap

    from tests.backends import echo_app
    from tests.conftest import free_port, wait_until
    from tests.test_reload import atomic_write

    p = await backends(echo_app("v1"))
    health = "  health: {path: /ready, interval: 100ms, timeout: 50ms, unhealthy_threshold: 1}\n"
    cfg = write_config(tmp_path, two_versions(p, free_port(), 100, 0) + health)

    async def health_series() -> dict[str, float]:
        async with session.get(g.admin + "/metrics") as r:
            text = await r.text()
        fam = _families(text).get("killgate_upstream_health")
        return {s.labels["version"]: s.value for s in fam.samples} if fam else {}  # type: ignore[attr-defined]

    async with running_gateway(cfg) as g:
        assert (await health_series()) == {"v1": 1.0, "v2": 0.0}
        atomic_write(cfg, cfg.read_text().split("routes:\n")[0] + "routes:\n" + textwrap.indent(
            textwrap.dedent(f"""\
            - name: iris
              match: {{path_prefix: /v2/models/iris}}
              stable: v1
              versions:
                - {{name: v1, url: "http://127.0.0.1:{p}", weight: 100}}
            """) + health, "  "))
        await wait_until(lambda: g.gw.metrics.get("killgate_config_reloads_total") == 1, 10,
                         what="the reload")
        assert (await health_series()) == {"v1": 1.0}


async def test_the_access_log_and_event_counters_are_there_at_zero_from_the_start(
        tmp_path: Path, backends, session) -> None:
    """The dashboard's panels read increase() of the access log's drops and of the webhook
    deliveries; each series first appeared at its first count, so the first lost lines and
    the first failed deliveries never showed (increase() needs two samples)."""
    from tests.backends import echo_app

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       extra=f"server:\n  access_log: true\ntelemetry:\n"
                             f"  access_log: {{path: {tmp_path / 'access.log'}}}\n")
    async with running_gateway(cfg) as g, session.get(g.admin + "/metrics") as r:
        text = await r.text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    for key in [("killgate_access_log_lines_total", ()),
                ("killgate_access_log_dropped_total", (("reason", "buffer_full"),)),
                ("killgate_access_log_dropped_total", (("reason", "write_failed"),)),
                ("killgate_event_deliveries_total", (("result", "delivered"),)),
                ("killgate_event_deliveries_total", (("result", "failed"),)),
                ("killgate_event_deliveries_total", (("result", "dropped"),))]:
        assert samples.get(key) == 0.0, key


def test_the_fixed_label_sets_started_at_zero_are_every_one_the_code_counts() -> None:
    """Counters labelled from a fixed set start at 0 for each value (an alert's first
    `increase()` needs two samples); a value the code counts that INITIAL lacks would hide
    its first event again, so the sets are checked against the code that counts them."""
    import re

    from gateway.config_admin import ApprovalsConfig

    root = Path(__file__).resolve().parent.parent / "gateway"
    started = {name: {s[0] for s in series if s} for name, (_, series) in INITIAL.items()}
    gated = {f.split("_")[0] for f in ApprovalsConfig.model_fields if f != "ttl"}
    assert started["killgate_break_glass_total"] == gated
    admin = set(re.findall(r'on_refused\("(\w+)"\)', (root / "admin/listener.py").read_text()))
    for counting in ("admin/hosts.py", "admin/scrape.py"):
        admin |= set(re.findall(r'"killgate_admin_refused_total", \("(\w+)",\)',
                                (root / counting).read_text()))
    assert admin and started["killgate_admin_refused_total"] == admin
    from gateway.admin.callers import REFUSALS

    assert started["killgate_auth_failures_total"] == {str(code) for code, _ in REFUSALS}
    from gateway.wiring.dataplane import _REFUSED

    assert started["killgate_connections_refused_total"] == set(_REFUSED.values())
