"""telemetry/requests.py and telemetry/record.py: the request series, unit and end to end."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import ClientTimeout, web
from prometheus_client.parser import text_string_to_metric_families

from gateway.config_telemetry import DURATION_BUCKETS, BucketsConfig
from gateway.telemetry import requests as requests_mod
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.record import NULL, RequestRecord, arm_of, combine
from gateway.telemetry.requests import SPLIT_WINDOW, RequestStats
from tests.backends import echo_app, sse_app
from tests.conftest import free_port, running_gateway, two_versions, wait_until, write_config

INFER = "/v2/models/iris/infer"


def _rec(route: str = "iris", version: str = "v1", decision: str = "weighted",
         status: int = 200, took: float = 0.003, upstream: float = -1.0,
         first_byte: float = 0.0, stable: str = "v1") -> RequestRecord:
    r = RequestRecord(100.0)
    r.route, r.version, r.decision, r.status, r.stable = route, version, decision, status, stable
    r.end = 100.0 + took
    r.upstream = upstream
    r.first_byte = 100.0 + first_byte if first_byte else 0.0
    return r


def _scrape(m: Metrics) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(m.render())}


def _samples(fam: Any, suffix: str = "") -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in fam.samples
            if s.name == fam.name + suffix}


def test_arm_of_each_decision() -> None:
    assert arm_of("weighted", "v1", "v1") == "stable"
    assert arm_of("sticky", "v2", "v1") == "canary"
    assert arm_of("pinned", "v2", "v1") == "canary"
    assert arm_of("failover", "v1", "v1") == "failover"
    assert arm_of("fallback", "", "v1") == "fallback"
    assert arm_of("killed", "v2", "v1") == "killed"
    assert arm_of("", "", "") == ""


def test_combine_skips_the_no_op() -> None:
    s = RequestStats(BucketsConfig())
    assert combine() is NULL and combine(None, NULL) is NULL
    assert combine(None, s) is s
    both = combine(s, RequestStats(BucketsConfig()))
    both.done(_rec())
    assert s.counts() == {("iris", "v1", "weighted", "stable", 200): 1}


def test_histogram_buckets_counts_and_sum() -> None:
    s = RequestStats(BucketsConfig())
    for took in (0.004, 0.005, 0.3, 45.0, 120.0):  # 0.005 falls in le=0.005 (le is <=)
        s.done(_rec(took=took, upstream=took / 2))
    s.done(_rec(version="v2", decision="failover", status=503, took=0.02))
    m = Metrics()
    m.source(s)
    fams = _scrape(m)
    dur = fams["killgate_request_duration_seconds"]
    assert dur.type == "histogram"
    key = (("arm", "stable"), ("code", "2xx"), ("decision", "weighted"), ("route", "iris"),
           ("version", "v1"))
    buckets = {dict(k)["le"]: v for k, v in _samples(dur, "_bucket").items()
               if dict(k)["version"] == "v1"}
    assert buckets["0.005"] == 2 and buckets["0.25"] == 2 and buckets["0.5"] == 3
    assert buckets["30.0"] == 3 and buckets["60.0"] == 4 and buckets["+Inf"] == 5
    assert len(buckets) == len(DURATION_BUCKETS) + 1
    assert _samples(dur, "_count")[key] == 5
    assert abs(_samples(dur, "_sum")[key] - 165.309) < 1e-9
    failover = (("arm", "failover"), ("code", "5xx"), ("decision", "failover"),
                ("route", "iris"), ("version", "v2"))
    assert _samples(dur, "_count")[failover] == 1
    up = _samples(fams["killgate_upstream_duration_seconds"], "_count")
    assert up == {(("route", "iris"), ("version", "v1")): 5}  # v2 never reached a backend
    total = _samples(fams["killgate_requests"], "_total")
    assert total[(("arm", "failover"), ("code", "503"), ("decision", "failover"),
                  ("route", "iris"), ("version", "v2"))] == 1


def test_times_are_bucketed_in_batches_and_every_read_sees_all_of_them() -> None:
    """done() only appends a request's times; they are bucketed when _BATCH wait (memory
    stays bounded) and before any read, with the same le semantics as one at a time."""
    s = RequestStats(BucketsConfig())
    n = requests_mod._BATCH * 2 + 7
    times = [(i % 13) * 0.0025 for i in range(n)]  # every third lands on a boundary
    for t in times:
        s.done(_rec(took=t, upstream=t, first_byte=t))
        assert len(s._entries[("iris", "v1", "weighted", "v1", 200)].pending) < requests_mod._BATCH
    e = s.entries[("iris", "v1", "weighted", "v1", 200)]  # (a read: nothing left pending)
    assert not e.pending and not e.pending_upstream and not e.pending_ttfb
    bounds, counts = e.duration
    expected = [0] * (len(bounds) + 1)
    took = [(100.0 + t) - 100.0 for t in times]  # (as done() computes it from start, end)
    for t in took:
        expected[sum(b < t for b in bounds)] += 1
    assert counts[:-1] == expected and e.upstream[1][:-1][0] == 3 * (n // 13) + min(3, n % 13)
    assert abs(counts[-1] - sum(took)) < 1e-9 and sum(e.ttfb[1][:-1]) == n - times.count(0.0)
    s.done(_rec(took=0.004))  # one more after a read, then read again
    assert s.counts() == {("iris", "v1", "weighted", "stable", 200): n + 1}


def test_labels_changing_between_requests_count_as_found_afresh() -> None:
    """done() keeps the entry of the last request's labels (an identity check): requests
    whose labels change every time, equal strings that are other objects, and status codes
    past the small ints count the same as one lookup of each request's labels."""
    s = RequestStats(BucketsConfig())
    want: Counter[tuple[str, str, str, str, int]] = Counter()
    combos = [("iris", "v1", "weighted", "v1", 200), ("iris", "v2", "weighted", "v1", 200),
              ("iris", "v1", "weighted", "v1", 503), ("iris", "v1", "failover", "v1", 200),
              ("iris", "v1", "weighted", "v2", 200), ("chat", "v1", "weighted", "v1", 200),
              ("", "", "", "", 404)]
    for i in range(3000):
        route, version, decision, stable, status = combos[(i * 7 + i // 5) % len(combos)]
        if i % 3 == 0:  # equal strings, other objects; an int made afresh
            route, version = "".join(list(route)), "".join(list(version))
            decision, stable = "".join(list(decision)), "".join(list(stable))
            status = int(str(status))
        s.done(_rec(route, version, decision, status, stable=stable))
        want[route, version, decision, arm_of(decision, version, stable), status] += 1
    assert s.counts() == dict(want)
    assert sum(sum(e.duration[1][:-1]) for e in s.entries.values()) == 3000


def test_per_route_boundaries() -> None:
    s = RequestStats(BucketsConfig.model_validate(
        {"request_duration": [0.1, 1], "routes": {"chat": [1, 10, 100, 300]}}))
    s.done(_rec(route="chat", took=50.0, upstream=2.0))
    s.done(_rec(took=0.5))
    fams = _scrape(_metrics(s))
    les = {(dict(k)["route"], dict(k)["le"]) for k in
           _samples(fams["killgate_request_duration_seconds"], "_bucket")}
    assert les == {("chat", "1.0"), ("chat", "10.0"), ("chat", "100.0"), ("chat", "300.0"),
                   ("chat", "+Inf"), ("iris", "0.1"), ("iris", "1.0"), ("iris", "+Inf")}
    up_les = {dict(k)["le"] for k in
              _samples(fams["killgate_upstream_duration_seconds"], "_bucket")}
    assert up_les == {"1.0", "10.0", "100.0", "300.0", "+Inf"}


def _metrics(s: RequestStats) -> Metrics:
    m = Metrics()
    m.source(s)
    return m


def test_split_share_over_the_last_minute() -> None:
    now = [1000.0]
    s = RequestStats(BucketsConfig(), lambda: {"iris": {"v1": 90.0, "v2": 10.0}},
                     clock=lambda: now[0])
    for _ in range(50):
        s.done(_rec(version="v2"))  # an old burst on v2
    s.split()  # a scrape
    now[0] += SPLIT_WINDOW + 1
    s.split()  # a scrape a minute later: the window now starts here
    for _ in range(80):
        s.done(_rec())
    for _ in range(20):
        s.done(_rec(version="v2"))
    s.done(_rec(decision="killed", version=""))  # served by no version: not in the split
    now[0] += 5
    fams = _scrape(_metrics(s))
    share = _samples(fams["killgate_split_share"])
    assert share[(("route", "iris"), ("version", "v1"))] == 0.8
    assert share[(("route", "iris"), ("version", "v2"))] == 0.2
    drift = _samples(fams["killgate_split_drift"])
    assert abs(drift[(("route", "iris"), ("version", "v2"))] - 0.1) < 1e-9
    assert _samples(fams["killgate_split_expected_share"])[
        (("route", "iris"), ("version", "v1"))] == 0.9
    assert _samples(fams["killgate_split_window_answers"])[
        (("route", "iris"), ("version", "v2"))] == 20


def test_pinned_answers_are_not_in_the_split() -> None:
    """`x-killgate-pin` is the client's choice, not the split's: a dark launch (a version at
    weight 0 in the file, reachable by pin only) answered its pinned requests, and counted,
    they were "drift" from the intended 0 % (KillgateSplitDrift paged for the documented
    feature; any client pinning could set it off) and shrank the other versions' shares."""
    now = [1000.0]
    s = RequestStats(BucketsConfig(), lambda: {"iris": {"v1": 90.0, "v2": 10.0, "v3": 0.0}},
                     clock=lambda: now[0])
    for _ in range(90):
        s.done(_rec())
    for _ in range(10):
        s.done(_rec(version="v2"))
    for _ in range(100):
        s.done(_rec(version="v3", decision="pinned"))
    s.done(_rec(version="v2", decision="pinned"))
    fams = _scrape(_metrics(s))
    share = _samples(fams["killgate_split_share"])
    assert share == {(("route", "iris"), ("version", v)): x
                     for v, x in (("v1", 0.9), ("v2", 0.1), ("v3", 0.0))}, share
    drift = _samples(fams["killgate_split_drift"])
    assert all(abs(d) < 1e-9 for d in drift.values()), drift
    assert _samples(fams["killgate_split_window_answers"])[
        (("route", "iris"), ("version", "v3"))] == 0
    # (the pinned answers are counted, as answers: in killgate_requests_total)
    assert sum(v for k, v in _samples(fams["killgate_requests"], "_total").items()
               if ("decision", "pinned") in k) == 101


def test_scrapes_in_quick_succession_keep_the_window_bounded() -> None:
    """/metrics needs no token: a client scraping it hundreds of times a second (or a few
    Prometheus servers and dashboards) kept one snapshot per scrape for a minute, so memory
    and the cost of every scrape grew with the scrape rate. Now at most one a second is
    kept, and the share is still that of the last minute's answers."""
    now = [1000.0]
    s = RequestStats(BucketsConfig(), lambda: {"iris": {"v1": 50.0, "v2": 50.0}},
                     clock=lambda: now[0])
    for i in range(20_000):  # 200 s: an answer and a scrape every 10 ms
        s.done(_rec(version="v2" if i % 2 else "v1"))
        now[0] += 0.01
        s.split()
    assert len(s._window) <= SPLIT_WINDOW + 3, len(s._window)
    per, totals = s.split()
    assert 6000 <= totals["iris"] <= 6100 + 100, totals  # the last 60-61 s
    assert abs(per[("iris", "v1")] - per[("iris", "v2")]) <= 1


def test_no_traffic_no_share() -> None:
    s = RequestStats(BucketsConfig(), lambda: {"iris": {"v1": 100.0, "v2": 0.0}})
    fams = _scrape(_metrics(s))
    assert not fams["killgate_split_share"].samples
    assert _samples(fams["killgate_split_window_answers"])[
        (("route", "iris"), ("version", "v1"))] == 0


# ---------------------------------------------------------------------------- end to end


async def test_metrics_match_the_requests_sent(tmp_path: Path, backends, session) -> None:
    """/metrics parses with prometheus_client's parser, every family is typed, and the
    duration histogram's counts equal the answers sent, per route and version; the arm
    tells failover answers apart; streamed answers get a time to first byte; labels come
    only from config names and fixed enums, whatever the clients send."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    sse = await backends(sse_app("s1", events=3, interval=0.01))
    dead = free_port()  # nothing listens: every request for it fails over
    routes = textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          allow_pin: true
          versions:
            - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 70}}
            - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 30}}
        - name: chat
          match: {{path_prefix: /chat}}
          stable: s1
          versions:
            - {{name: s1, url: "http://127.0.0.1:{sse}", weight: 100}}
        - name: flaky
          match: {{path_prefix: /flaky}}
          stable: a
          versions:
            - {{name: a, url: "http://127.0.0.1:{p1}", weight: 50}}
            - {{name: b, url: "http://127.0.0.1:{dead}", weight: 50}}
        """)
    cfg = write_config(tmp_path, routes, extra="telemetry:\n  buckets:\n"
                                               "    routes: {chat: [0.5, 5, 50]}\n")
    async with running_gateway(cfg) as g:
        sent: Counter[tuple[str, str, str]] = Counter()

        async def go(method: str, path: str, **kw: Any) -> None:
            async with session.request(method, g.url + path, **kw) as r:
                await r.read()
                sent[(r.headers.get("x-killgate-route", ""),
                      r.headers.get("x-killgate-version", ""),
                      r.headers.get("x-killgate-decision", ""))] += 1

        await asyncio.gather(*(go("POST", INFER, json={"i": i}) for i in range(120)))
        await asyncio.gather(*(go("GET", "/chat/stream") for _ in range(4)))
        await asyncio.gather(*(go("GET", "/flaky/x") for _ in range(30)))
        # hostile input: none of it may become a label value
        for path, headers in (("/nope\x1b[31m", {}), ("/v2/models/iris/x", {"x-killgate-pin": "evil"}),
                              ("/x", {"x-killgate-version": "forged"})):
            await go("GET", path, headers=headers)
        async with session.get(g.admin + "/metrics") as r:
            text = await r.text()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert all(f.type in ("counter", "gauge", "histogram") for f in fams.values()), \
        [(f.name, f.type) for f in fams.values() if f.type not in ("counter", "gauge", "histogram")]
    dur = fams["killgate_request_duration_seconds"]
    got: Counter[tuple[str, str, str]] = Counter()
    for s in dur.samples:
        if s.name.endswith("_count"):
            got[(s.labels["route"], s.labels["version"], s.labels["decision"])] += int(s.value)
    assert got == sent, (got, sent)
    per_rv: Counter[tuple[str, str]] = Counter()
    for (route, version, _), n in sent.items():
        per_rv[(route, version)] += n
    totals: Counter[tuple[str, str]] = Counter()
    for s in fams["killgate_requests"].samples:
        totals[(s.labels["route"], s.labels["version"])] += int(s.value)
    assert totals == per_rv
    assert sent[("iris", "v1", "weighted")] + sent[("iris", "v2", "weighted")] == 120
    # the arm: every flaky request choosing b failed over to a
    arms = Counter((s.labels["route"], s.labels["version"], s.labels["arm"]) for s in
                   fams["killgate_requests"].samples for _ in range(int(s.value)))
    assert arms[("flaky", "a", "failover")] == sent[("flaky", "a", "failover")] > 0
    assert arms[("flaky", "a", "stable")] == sent[("flaky", "a", "weighted")] > 0
    assert arms[("iris", "v2", "canary")] == sent[("iris", "v2", "weighted")] > 0
    # streamed answers: time to first byte, on the route's own boundaries
    ttfb = {s.labels["route"]: s.value for s in fams["killgate_time_to_first_byte_seconds"].samples
            if s.name.endswith("_count")}
    assert ttfb == {"chat": 4}
    chat_les = {s.labels["le"] for s in dur.samples
                if s.name.endswith("_bucket") and s.labels["route"] == "chat"}
    assert chat_les == {"0.5", "5.0", "50.0", "+Inf"}
    up = {(s.labels["route"], s.labels["version"]): s.value
          for s in fams["killgate_upstream_duration_seconds"].samples if s.name.endswith("_count")}
    assert up[("iris", "v1")] == sent[("iris", "v1", "weighted")]
    assert ("flaky", "b") not in up  # never answered
    share = {(s.labels["route"], s.labels["version"]): s.value
             for s in fams["killgate_split_share"].samples}
    assert share[("flaky", "a")] == 1.0 and share[("chat", "s1")] == 1.0
    assert abs(share[("iris", "v2")] - sent[("iris", "v2", "weighted")] / 120) < 1e-9
    # labels: config names and fixed enums only
    allowed = {"route": {"", "iris", "chat", "flaky"}, "version": {"", "v1", "v2", "s1", "a", "b"},
               "decision": {"", "weighted", "sticky", "pinned", "failover", "fallback", "killed"},
               "arm": {"", "stable", "canary", "failover", "fallback", "killed"}}
    for f in fams.values():
        for s in f.samples:
            for k, v in s.labels.items():
                if k in allowed:
                    assert v in allowed[k], (f.name, k, v)


async def test_a_request_the_client_gave_up_on_is_counted_as_499(tmp_path: Path, backends,
                                                                  session) -> None:
    """A canary that hangs: clients give up long before the route's total timeout. Those
    requests were in no series and no access-log line, so the canary looked idle, not
    slow (no 5xx, no duration samples) and no shipped alert could see it. Now each counts
    with code 499 (nginx's "client closed request"), its duration the time until then."""
    release = asyncio.Event()

    async def hang(req: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    p1, p2 = await backends(echo_app("v1")), await backends(app)
    log = tmp_path / "access.jsonl"
    cfg = write_config(tmp_path, two_versions(p1, p2, 0, 100), extra=(
        f"server: {{access_log: true}}\ntelemetry:\n  access_log: {{path: {log}}}\n"))
    try:
        async with running_gateway(cfg) as g:
            for _ in range(3):
                try:
                    async with session.post(g.url + INFER, json={},
                                            timeout=ClientTimeout(total=0.3)) as r:
                        await r.read()
                except TimeoutError:
                    pass

            async def counted() -> dict[str, Any]:
                async with session.get(g.admin + "/metrics") as r:
                    fams = {f.name: f for f in text_string_to_metric_families(await r.text())}
                return fams if fams["killgate_requests"].samples else {}

            fams = await wait_until(counted, 10, 0.05, what="the abandoned requests counted")
    finally:
        release.set()
    (sample,) = fams["killgate_requests"].samples
    assert sample.value == 3 and sample.labels == {
        "route": "iris", "version": "v2", "decision": "weighted", "arm": "canary",
        "code": "499"}
    counts = [s for s in fams["killgate_request_duration_seconds"].samples
              if s.name.endswith("_count")]
    assert [(s.labels["code"], s.value) for s in counts] == [("4xx", 3)]
    total = next(s.value for s in fams["killgate_request_duration_seconds"].samples
                 if s.name.endswith("_sum"))
    assert 0.6 < total < 3, total  # about 0.3 s each
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["version"], x["status"]) for x in lines] == [("v2", 499)] * 3


async def test_a_short_stream_whole_in_one_read_counts_its_time_to_first_byte(
        tmp_path: Path, backends, session) -> None:
    """The deployment review's item: a short SSE answer whose body came with its head (a
    few tokens, a stream answered with Content-Length) took the whole-answer path, which
    recorded no time to first byte: 19 of 40 short streams were counted, and the
    dashboard's time to first token read only the slower ones. JSON answers still count
    none (README: streamed answers)."""
    async def short(_: web.Request) -> web.Response:
        return web.Response(body=b'data: {"t": "hi"}\n\ndata: [DONE]\n\n',
                            content_type="text/event-stream")

    async def whole(_: web.Request) -> web.Response:
        return web.json_response({"ok": 1})

    app = web.Application()
    app.router.add_get("/v2/models/iris/sse", short)
    app.router.add_get("/v2/models/iris/json", whole)
    p = await backends(app)
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0))
    async with running_gateway(cfg) as g:
        for path in ("sse", "json"):
            for _ in range(10):
                async with session.get(f"{g.url}/v2/models/iris/{path}") as r:
                    assert r.status == 200 and await r.read()
        async with session.get(g.admin + "/metrics") as r:
            text = await r.text()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    ttfb = [s.value for s in fams["killgate_time_to_first_byte_seconds"].samples
            if s.name.endswith("_count")]
    assert ttfb == [10.0], ttfb
