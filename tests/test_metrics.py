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
    assert not undocumented, f"add these to telemetry/metrics.py HELP: {undocumented}"


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
