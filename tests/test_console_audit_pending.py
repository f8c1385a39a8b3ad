"""The console said nothing of a config change whose audit event waits for the store, nor of a
reload's warnings, while `killgate status` printed AUDIT PENDING and RELOAD WARNING lines
(found by revreload): ui/js/warnings.js must never look green while the CLI warns, and
drew neither. Real Chromium, a real fleet (`killgate serve` x2, real redis-server stopped
through the reload, then started again)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import admin_token, wait_until_sync
from tests.console_rig import Browser, Fleet, running_fleet
from tests.test_reload import atomic_write

pytestmark = pytest.mark.timeout(120)

READER = admin_token("killgate:read", "bob", 10800)
KILLER = admin_token("killgate:read killgate:kill", "alice", 10800)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("console-audit")) as fl:
        yield fl


@pytest.fixture(scope="module", autouse=True)
def _quick_rounds(browser: Browser) -> None:
    """Drawn by the page's next round: every 1 s here (console_rig `quick_rounds`)."""
    browser.quick_rounds()


def _config(fleet: Fleet) -> dict[str, object]:
    return fleet.api("GET", "/v1/status", READER)["config"]  # type: ignore[no-any-return]


def test_an_audit_waiting_for_the_store_is_among_the_warnings(fleet: Fleet,
                                                              browser: Browser) -> None:
    b = browser
    cfg = fleet.gateways[0].config  # the instance the page reads
    original, digest = cfg.read_text(), _config(fleet)["digest"]
    b.sign_in(fleet.admin, READER, "bob")
    fleet.redis.kill()
    try:
        atomic_write(cfg, original.replace("weight: 90}", "weight: 80}", 1))
        wait_until_sync(lambda: _config(fleet)["audit_pending"], 20, 0.05,
                        "the reload's audit pending")
        b.wait(lambda d: "AUDIT PENDING" in b.text("#warnings"), "the pending audit shown")
        assert "config.reload" in b.text("#warnings")
    finally:
        fleet.redis.start()
        wait_until_sync(lambda: not _config(fleet)["audit_pending"], 30, 0.1,
                        "the audit recorded")
    b.wait(lambda d: "AUDIT PENDING" not in b.text("#main"), "the warning gone")
    atomic_write(cfg, original)
    wait_until_sync(lambda: _config(fleet)["digest"] == digest, 30, 0.1, "the file back")


def test_a_reload_warning_is_among_the_warnings(fleet: Fleet, browser: Browser) -> None:
    """A kill in force whose traffic the new file may serve under another name (a route
    added that takes some of the killed route's requests): RELOAD WARNING in `killgate status`."""
    b = browser
    cfg = fleet.gateways[0].config
    original = cfg.read_text()
    fleet.api("POST", "/v1/kill", KILLER, body={"scope": "route", "route": "iris-beta",
                                             "reason": "bad canary"})
    b.sign_in(fleet.admin, READER, "bob")
    twin = original.replace("- name: iris-beta\n", "- name: iris-gamma\n"
                            "    match: {path_prefix: /v2/models/iris/infer, header: {x-tenant: beta}}\n"
                            "    stable: v1\n    versions:\n"
                            "      - {name: v1, url: \"http://127.0.0.1:1\", weight: 100}\n"
                            "  - name: iris-beta\n", 1)
    assert twin != original
    try:
        atomic_write(cfg, twin)
        wait_until_sync(lambda: _config(fleet)["warnings"], 20, 0.05, "the reload's warning")
        b.wait(lambda d: "RELOAD WARNING" in b.text("#warnings"), "the reload warning shown")
        assert "iris-gamma" in b.text("#warnings")
    finally:
        atomic_write(cfg, original)
        wait_until_sync(lambda: not _config(fleet)["warnings"], 20, 0.05, "the file back")
        fleet.api("POST", "/v1/unkill", KILLER, body={"scope": "route", "route": "iris-beta",
                                                   "reason": "t over"})


def test_a_dropped_audit_is_among_the_warnings(fleet: Fleet, browser: Browser) -> None:
    """`/v1/status` config.audit_dropped (a change in no audit event: more than 64 waited
    for the store; tests/test_reload_audit_dropped.py makes one), drawn by the page's own
    warnings module from this instance's status with that field set, as `killgate status`
    prints AUDIT DROPPED."""
    b = browser
    b.sign_in(fleet.admin, READER, "bob")
    status = fleet.api("GET", "/v1/status", READER)
    status["config"]["audit_dropped"] = {"count": 2, "last": {
        "from": "sha256:" + "0" * 64, "to": "sha256:" + "1" * 64,
        "changed_at": "2026-12-07T02:00:00.000Z", "error": ""}}
    got = b.d.execute_async_script("""
        const [doc, done] = arguments;
        import('/ui/js/warnings.js').then((m) => done(m.warnings(doc, null, null)
          .map(([kind, word, text]) => `${kind} ${word} ${text}`)))
          .catch((exc) => done([String(exc)]));""", status)
    line = next((x for x in got if "AUDIT DROPPED" in x), None)
    assert line is not None, got
    assert line.startswith("bad ") and "2 config change(s)" in line \
        and "2026-12-07T02:00:00.000Z" in line, line
