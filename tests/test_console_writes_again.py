"""What the console does when a write's answer never came, and when an optional feature's
list stops answering (items left by review), in a real Chromium against a real fleet.

A write from a dialog carries an Idempotency-Key, the same for the same dialog's same
request sent again, as the CLI's retry does: a kill whose answer was lost (applied or not)
sent again is answered with the first try's result, never applied twice. The approvals
list answered 404/405 (a proxy that stopped passing it, an instance without approvals
behind the same address) is cleared and said, never left standing as current."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from tests.conftest import admin_token, wait_until_sync
from tests.console_rig import Browser, Fleet, behind_proxy, running_fleet

pytestmark = pytest.mark.timeout(120)

READER = admin_token("killgate:read", "bob", 10800)
ADMIN = admin_token("killgate:admin", "carol", 10800)

# the first POST the page sends reaches the gateway, and its answer is then lost on the
# way back (a connection cut after the request landed): the page sees no answer at all
LOSE_FIRST_ANSWER = """
window.__sent = [];
const real = window.fetch.bind(window);
window.fetch = async (url, init) => {
  if (!init || init.method !== 'POST') return real(url, init);
  const resp = await real(url, init);
  window.__sent.push({key: init.headers['Idempotency-Key'] || null,
                      replayed: resp.headers.get('idempotent-replayed')});
  if (window.__sent.length === 1) throw new TypeError('the connection was cut');
  return resp;
};
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("console-again"),
                       extra="approvals:\n  unkill_route: 2\n") as fl:
        yield fl


@pytest.fixture(scope="module", autouse=True)
def _quick_rounds(browser: Browser) -> None:
    """What the tests wait for is drawn by the page's next refresh round: every 1 s here,
    not 3 (tests/console_rig.py `Browser.quick_rounds`; no test here is about the period)."""
    browser.quick_rounds()


def _kills(fleet: Fleet, reason: str) -> list[dict[str, object]]:
    events = fleet.api("GET", "/v1/audit?limit=50", READER)["events"]
    return [e for e in events if e.get("action") == "kill" and e.get("reason") == reason]


def test_a_kill_sent_again_after_its_answer_was_lost_is_applied_once(
        fleet: Fleet, browser: Browser) -> None:
    """The page's writes had no Idempotency-Key: "may or may not have been applied", then
    Apply again, and the kill ran (and was audited) twice."""
    b = browser
    b.sign_in(fleet.admin, ADMIN, "carol")
    b.d.execute_script(LOSE_FIRST_ANSWER)
    b.click("button[data-key='kill-iris/v2']")
    b.d.find_element(By.ID, "action-reason").send_keys("INC-31")
    b.click("#action-apply")
    lost = str(b.wait(lambda d: b.text("#action-result [data-testid=api-error]"), "the error"))
    assert "unreachable" in lost, lost
    b.click("#action-apply")  # the same dialog, the same request, sent again
    receipt = str(b.wait(lambda d: b.text("#action-result [data-testid=receipt]"),
                         "the receipt"))
    assert receipt.startswith("generation"), receipt
    sent = b.d.execute_script("return window.__sent")
    try:
        assert len(sent) == 2, sent
        assert sent[0]["key"] and re.fullmatch(r"[0-9a-f]{32}", sent[0]["key"]), sent
        assert sent[1]["key"] == sent[0]["key"], sent
        assert sent[1]["replayed"] == "true", sent  # the first try's answer, not a new kill
        assert len(_kills(fleet, "INC-31")) == 1, _kills(fleet, "INC-31")
    finally:
        b.click("#action-cancel")
        fleet.api("POST", "/v1/unkill", ADMIN, body={"scope": "version", "route": "iris",
                                                     "version": "v2", "reason": "INC-31 over"})


def test_a_changed_request_in_the_same_dialog_gets_its_own_key(
        fleet: Fleet, browser: Browser) -> None:
    """The same dialog sent again with another reason is another request: a key of its
    own (the first key with another body would be refused 409 idempotency_key_reused)."""
    b = browser
    b.sign_in(fleet.admin, ADMIN, "carol")
    b.d.execute_script(LOSE_FIRST_ANSWER)
    b.click("button[data-key='kill-iris/v2']")
    b.d.find_element(By.ID, "action-reason").send_keys("INC-32")
    b.click("#action-apply")
    b.wait(lambda d: b.text("#action-result [data-testid=api-error]"), "the error")
    b.d.find_element(By.ID, "action-reason").send_keys(" (again)")
    b.click("#action-apply")
    receipt = str(b.wait(lambda d: b.text("#action-result [data-testid=receipt]"),
                         "the receipt"))
    sent = b.d.execute_script("return window.__sent")
    try:
        assert receipt.startswith("generation"), receipt
        assert len(sent) == 2 and sent[0]["key"] != sent[1]["key"], sent
        assert sent[1]["replayed"] is None, sent
    finally:
        b.click("#action-cancel")
        fleet.api("POST", "/v1/unkill", ADMIN, body={"scope": "version", "route": "iris",
                                                     "version": "v2", "reason": "INC-32 over"})


def test_an_approvals_list_that_stops_answering_is_cleared_and_said(
        fleet: Fleet, browser: Browser, tmp_path: Path) -> None:
    """GET /v1/approvals answering 404 (the feature list, read once, still names it): the
    panel kept the last list drawn, a request waiting as if current."""
    b = browser
    fleet.api("POST", "/v1/kill", ADMIN, body={"scope": "route", "route": "iris",
                                               "reason": "INC-33"})
    asked = fleet.api("POST", "/v1/unkill", ADMIN, body={"scope": "route", "route": "iris",
                                                         "reason": "INC-33 fixed"})
    ident = asked["approval"]["id"]
    # (a file nginx's unprivileged worker can look for: pytest's folders are not open to it)
    flags = Path(tempfile.mkdtemp(prefix="kg-approvals-"))
    flags.chmod(0o755)
    gone = flags / "gone"
    port = fleet.gateways[0].admin_port
    loc = (f"location = /v1/approvals {{ if (-f {gone}) {{ return 404; }} "
           f"proxy_pass http://127.0.0.1:{port}; "
           f'proxy_set_header Authorization "Bearer {READER}"; }}')
    with behind_proxy(b, fleet, tmp_path, READER, loc) as url:
        b.d.get(url + "/ui/")
        b.wait(lambda d: b.text("[data-testid=subject]") == "bob", "signed in by the proxy")
        item = f"#approvals-body li[data-approval='{ident}']"
        b.wait(lambda d: "INC-33 fixed" in b.text(item), "the request listed",
               seen="#approvals")
        gone.write_text("")
        # (the panel's own words: a list drawn can hold "404" too, in a time or an id, and
        # a CI run saw the wait end while the list was still shown)
        b.wait(lambda d: "answered 404/405" in b.text("#approvals-body"), "the 404 said",
               timeout=10)
        assert not b.d.find_elements(By.CSS_SELECTOR, item), "the old list still shown"
        assert "not shown" in b.text("#approvals-body")
    gone.unlink()
    flags.rmdir()
    fleet.api("POST", f"/v1/approvals/{ident}/decline", ADMIN, body={"reason": "t"})
    wait_until_sync(lambda: not fleet.api("GET", "/v1/approvals", READER)["approvals"],
                    10, 0.05, "the request declined")
