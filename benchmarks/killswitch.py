"""Kill-switch benchmarks (issue 3): the cost of the check, propagation, and stream cut time.

Run:  .venv/bin/python benchmarks/killswitch.py [--kills 200] [--duration 8]

Every side is its own process on 127.0.0.1: a redis-server (own port, no persistence),
benchmarks/backend.py, `killgate serve` instances, and wrk for load. Prints one table:

(a) per-request cost of the kill check:
    - a micro-benchmark (this process): ns per routing decision on a table holding kills,
      next to a bare dict lookup, and the same decision with no kills at all;
    - gateway throughput with the in-memory check vs the same build with a naive
      `GET` to Redis awaited on every request (benchmarks/naive_gateway.py), same wrk load.
(b) kill propagation: 3 instances on one Redis, N kills/unkills through the admin API,
    20 ms apart and again back to back; from the call leaving the client to the last
    instance swapping in its new table (each instance logs `state_applied.applied_at`),
    the client-side round trip (the call answers once every instance acked) and the
    receipt's own elapsed_ms, p50/p99. Configs and snapshots live in separate folders,
    as in /etc/killgate and /var/lib/killgate. Before the instances start, the floor under
    those figures is measured on the same Redis (benchmarks/kill_floor.py): three plain
    processes taking the same hops (HTTP call, PUBLISH, three subscribers) with none of
    killgate's work.
    `--propagation-only` runs (b) alone.
(c) in-flight stream cut: an SSE stream through the gateway, a version kill; time from the
    kill call to the `killgate.error` event at the client, p50/p99.
(d) `--signing`: what state signing costs propagation. Two fleets of 3 instances on the same
    Redis (own prefixes), one signed (`killgate serve`), one with signing switched off
    (benchmarks/unsigned_gateway.py, the same build with no key), measured in rounds of
    the (b) series with the two fleets' calls interleaved; kill and unkill p50/p99 for each,
    and the difference. An unkill would relax the state, so its push is only a hint: every
    instance re-reads the store before applying it (one GET more than an unsigned unkill).
(e) `--against TREE`: the same two-fleet measure for this source tree and another (an
    export of main, say): the A/B of a change to the kill path. Before the fleets start,
    the floor is measured as in (b). Kills and unkills are reported apart in (b) and (e):
    the goal is about kills, and an unkill re-reads the store by design.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

from _procs import SECRET, Procs, free_port, pct, wait_http  # noqa: E402
from kill_floor import measure_floor  # noqa: E402

from gateway.admin.tokens import mint  # noqa: E402
from gateway.configfile import parse_config_text  # noqa: E402
from gateway.domain.statedoc import KillFlag, StateDoc  # noqa: E402
from gateway.domain.tablebuild import build_table  # noqa: E402

PROCS = Procs()
BODY = b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[6.1,2.8,4.7,1.2]}]}'


def gateway_config(tmp: Path, name: str, backend_port: int, redis_url: str,
                   prefix: str = "kgbench") -> tuple[Path, int, int]:
    port, admin = free_port(), free_port()
    (tmp / "conf").mkdir(exist_ok=True)
    p = tmp / "conf" / f"{name}.yaml"  # the config folder holds configs only (it is watched)
    p.write_text(f"""
listen: 127.0.0.1:{port}
admin: {{listen: 127.0.0.1:{admin}}}
state:
  backend: redis
  url: {redis_url}
  prefix: {prefix}
  signing_key_env: KILLGATE_STATE_KEY
  snapshot_path: {tmp}/state/snap-{name}.json
log: {{level: info, format: json}}
routes:
  - name: bench
    match: {{path_prefix: /}}
    stable: v1
    versions:
      - {{name: v1, url: "http://127.0.0.1:{backend_port}", weight: 100}}
      - {{name: v2, url: "http://127.0.0.1:{backend_port}", weight: 0}}
""")
    return p, port, admin


# --------------------------------------------------------------------------- (a) micro


def micro() -> dict[str, float]:
    cfg = parse_config_text("""
routes:
  - name: iris
    match: {path_prefix: /v2/models/iris}
    stable: v1
    versions:
      - {name: v1, url: "http://127.0.0.1:1", weight: 90}
      - {name: v2, url: "http://127.0.0.1:2", weight: 10}
  - name: other
    match: {path_prefix: /other}
    stable: v1
    versions: [{name: v1, url: "http://127.0.0.1:3", weight: 100}]
""")
    kills = {f"version:other:v{i}": KillFlag("version", "other", f"v{i}", "a", "r", "t", 1)
             for i in range(50)}
    kills["version:iris:v2"] = KillFlag("version", "iris", "v2", "a", "r", "t", 1)
    with_kills = build_table(cfg, StateDoc(generation=1, kills=kills))
    without = build_table(cfg, StateDoc())
    rnd = random.random
    n = 200_000

    def decide(table):
        plan = table.match("/v2/models/iris/infer", "", {}, None)
        return plan.choose(None, None, rnd)

    d = {"version:iris:v2": 1, "route:iris": 1}
    out = {
        "decision_with_kills_ns": min(timeit.repeat(lambda: decide(with_kills), number=n,
                                                    repeat=5)) / n * 1e9,
        "decision_without_kills_ns": min(timeit.repeat(lambda: decide(without), number=n,
                                                       repeat=5)) / n * 1e9,
        "dict_lookup_ns": min(timeit.repeat(lambda: d.get("route:iris"), number=n,
                                            repeat=5)) / n * 1e9,
    }
    # what the kill check itself adds: the plan's precomputed `killed` attribute test
    plan = with_kills.by_name["iris"]
    out["killed_attr_check_ns"] = min(timeit.repeat(lambda: plan.killed, number=n,
                                                    repeat=5)) / n * 1e9
    return out


# --------------------------------------------------------------------------- (a) throughput


def wrk(url: str, duration: int, conns: int = 32) -> float:
    lua = Path(tempfile.mkstemp(suffix=".lua")[1])
    lua.write_text('wrk.method = "POST"\nwrk.body = \'' + BODY.decode() + '\'\n'
                   'wrk.headers["Content-Type"] = "application/json"\n')
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "-s", str(lua), url]
    subprocess.run(["wrk", "-t1", "-c8", "-d1s", "-s", str(lua), url], capture_output=True)
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or "Non-2xx" in out:
        raise SystemExit(f"wrk failed or saw errors:\n{out}")
    return float(m.group(1))


def throughput(tmp: Path, backend_port: int, redis_url: str, duration: int) -> dict[str, float]:
    res: dict[str, float] = {}
    for label, script in (("in_memory", [sys.executable, "-m", "gateway"]),
                          ("naive_redis_get", [sys.executable, str(ROOT / "benchmarks/naive_gateway.py")])):
        cfg, port, admin = gateway_config(tmp, f"tp-{label}", backend_port, redis_url)
        p = PROCS.start([*script, "serve", "-c", str(cfg)], tmp / f"tp-{label}.log",
                  env={"NAIVE_REDIS_URL": redis_url})
        wait_http(f"http://127.0.0.1:{admin}/readyz")
        before = _gets(redis_url)
        res[label] = wrk(f"http://127.0.0.1:{port}/", duration)
        gets = _gets(redis_url) - before
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(15)
        # each side is what its label says: the naive build awaited a GET per request (its
        # patch once missed the handler, and "naive" measured killgate itself), ours none
        served = res[label] * duration
        if label == "naive_redis_get" and gets < served:
            raise SystemExit(f"the naive build sent {gets} GETs for ~{served:.0f} requests: "
                             "benchmarks/naive_gateway.py no longer patches the data plane")
        if label == "in_memory" and gets > served / 100:
            raise SystemExit(f"killgate sent {gets} GETs for ~{served:.0f} requests")
    return res


def _gets(redis_url: str) -> int:
    """GET commands the redis at `redis_url` has run (INFO commandstats)."""
    import redis

    stats = redis.Redis.from_url(redis_url).info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


# --------------------------------------------------------------------------- (b) and (c)


class _Caller:
    """Kills and unkills, alternating, round robin over one fleet's admin APIs.

    The client is a bare HTTP/1.1 keep-alive connection per instance: each request is
    fully built before its send time is taken, so the figures start when the call leaves
    the client (an aiohttp client adds ~0.3 ms of its own before the bytes go out).
    """

    def __init__(self, conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
        self.conns = conns
        self.tok = mint(SECRET, "bench", "killgate:admin", 3600, "killgate", "killgate-admin")
        self.rtt: list[float] = []
        self.receipt: list[float] = []
        self.sent: dict[int, float] = {}
        self.sent_mono: dict[int, float] = {}  # (CLOCK_MONOTONIC: kill_stages.py's stamps')
        self.kinds: dict[int, str] = {}
        self.acked_all = 0
        self.data: dict = {}

    @classmethod
    async def open(cls, admins: list[int]) -> _Caller:
        return cls([await asyncio.open_connection("127.0.0.1", a) for a in admins])

    async def call(self, i: int) -> None:
        reader, writer = self.conns[i % len(self.conns)]
        path = "/v1/kill" if i % 2 == 0 else "/v1/unkill"
        body = json.dumps({"scope": "version", "route": "bench", "version": "v2",
                           "reason": f"bench {i}"}).encode()
        req = (f"POST {path}?wait=2s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Authorization: Bearer {self.tok}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        wall = time.time()
        mono = time.monotonic()
        t0 = time.perf_counter()
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        data = self.data = json.loads(await reader.readexactly(length))
        self.rtt.append((time.perf_counter() - t0) * 1000)
        assert head.startswith(b"HTTP/1.1 200"), head
        self.sent[data["generation"]] = wall
        self.sent_mono[data["generation"]] = mono
        self.kinds[data["generation"]] = "kill" if path == "/v1/kill" else "unkill"
        self.receipt.append(data["applied"]["elapsed_ms"])
        self.acked_all += data["applied"]["acked"] == data["applied"]["instances"]

    def close(self) -> None:
        for _, w in self.conns:
            w.close()

    def result(self) -> dict[str, list[float]]:
        sent, kinds = self.sent, self.kinds
        return {"rtt": self.rtt, "receipt": self.receipt, "acked_all": [float(self.acked_all)],
                "instances": [float(self.data["applied"]["instances"])],
                "sent": [sent[g] for g in sorted(sent)], "gens": [float(g) for g in sorted(sent)],
                "sent_mono": [self.sent_mono[g] for g in sorted(sent)],
                "kills": [float(g) for g in sorted(sent) if kinds[g] == "kill"]}


async def propagation(admins: list[int], kills: int, gap: float) -> dict[str, list[float]]:
    """`kills` calls to one fleet, `gap` seconds apart (see _Caller)."""
    caller = await _Caller.open(admins)
    try:
        for i in range(kills):
            await asyncio.sleep(gap)  # an operator's call finds a quiet fleet
            await caller.call(i)
    finally:
        caller.close()
    return caller.result()


async def interleaved(fleets: dict[str, list[int]], kills: int,
                      gap: float) -> dict[str, dict[str, list[float]]]:
    """`kills` calls to each fleet, one fleet after the other call by call (which goes
    first alternates), `gap` seconds between any two calls: both sides meet the same
    weather, paired at the scale of one call."""
    callers = {side: await _Caller.open(admins) for side, admins in fleets.items()}
    order = list(callers)
    try:
        for i in range(kills):
            for side in order if i % 4 < 2 else reversed(order):
                await asyncio.sleep(gap)
                await callers[side].call(i)
    finally:
        for c in callers.values():
            c.close()
    return {side: c.result() for side, c in callers.items()}


def enforcement_lags(logs: list[Path], gens: list[float], sent: list[float]) -> list[float]:
    """Per kill: from the client sending the call to the last instance applying it (ms)."""
    return list(lags_by_generation(logs, gens, sent).values())


def applied_times(log: Path) -> dict[int, float]:
    """Generation → when this instance swapped it in (its `state_applied.applied_at`)."""
    out = {}
    for line in log.read_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "state_applied":
            out[int(ev["generation"])] = float(ev["applied_at"])
    return out


def lags_by_generation(logs: list[Path], gens: list[float],
                       sent: list[float]) -> dict[int, float]:
    """Generation → ms from the call leaving the client to the last instance applying it."""
    applied: dict[int, list[float]] = {}
    for log in logs:
        for gen, at in applied_times(log).items():
            applied.setdefault(gen, []).append(at)
    out = {}
    for g, t in zip(gens, sent, strict=True):
        times = applied.get(int(g), [])
        if len(times) == len(logs):
            out[int(g)] = (max(times) - t) * 1000
    return out


def split_lags(logs: list[Path], res: dict[str, list[float]]) -> dict[str, list[float]]:
    """One series' lags apart for kills and unkills. The goal is about kills; an unkill
    relaxes the state, so every other instance re-reads the store before applying it (one
    round trip more by design: README, Trust), and a mixed median sits between the two."""
    lags = lags_by_generation(logs, res["gens"], res["sent"])
    kills = {int(g) for g in res["kills"]}
    return {"kill": [v for g, v in lags.items() if g in kills],
            "unkill": [v for g, v in lags.items() if g not in kills]}


def _slowlog(redis_url: str, on: bool) -> dict[str, list[list[object]] | dict[str, object]]:
    """on: log every command from now (SLOWLOG at 0 µs), stats zeroed; off: what was logged
    since (duration µs, the command's first words, the client's name) and INFO
    commandstats, and the slow log back to redis's default."""
    import redis

    r = redis.Redis.from_url(redis_url)
    if on:
        r.config_set("slowlog-max-len", 1_000_000)
        r.slowlog_reset()
        r.config_resetstat()
        r.config_set("slowlog-log-slower-than", 0)
        return {}
    r.config_set("slowlog-log-slower-than", 10_000)
    log = [[e["duration"], e["command"][:160].decode("utf-8", "replace"),
            (e.get("client_name") or b"").decode() if isinstance(e.get("client_name"), bytes)
            else e.get("client_name") or ""] for e in r.slowlog_get(-1)]
    return {"slowlog": log, "commandstats": r.info("commandstats")}


def signing_overhead(tmp: Path, bport: int, redis_url: str, kills: int, gap: float,
                     rounds: int) -> dict[str, dict[str, list[float]]]:
    """(d): kill and unkill propagation, signed vs unsigned fleets, calls interleaved."""
    sides = {"signed": [sys.executable, "-m", "gateway"],
             "unsigned": [sys.executable, str(ROOT / "benchmarks/unsigned_gateway.py")]}
    return side_by_side(tmp, bport, redis_url, sides, kills, gap, rounds)


def tree_gateway(tree: Path) -> list[str]:
    """`killgate` from the source tree `tree` (first on the path: not this one, nor the
    installed package)."""
    boot = (f"import sys; sys.path.insert(0, {str(tree)!r}); "
            "from gateway.cli.main import main; raise SystemExit(main(sys.argv[1:]))")
    return [sys.executable, "-c", boot]


def side_by_side(tmp: Path, bport: int, redis_url: str, sides: dict[str, list[str]],
               kills: int, gap: float, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Two fleets of 3 instances on one Redis (own prefixes), each started by its own
    command, measured in rounds of the (b) series with their calls interleaved: the
    machine's weather falls on both sides alike. Side → kill and unkill lags, API round
    trips."""
    fleets: dict[str, tuple[list[int], list[Path]]] = {}
    for side, cmd in sides.items():
        admins, logs = [], []
        for name in ("a", "b", "c"):
            n = f"{side}-{name}"
            cfg, _port, admin = gateway_config(tmp, n, bport, redis_url, f"kg{side}")
            PROCS.start([*cmd, "serve", "-c", str(cfg)], tmp / f"{n}.log")
            admins.append(admin)
            logs.append(tmp / f"{n}.log")
        fleets[side] = (admins, logs)
    for admins, _ in fleets.values():
        for a in admins:
            wait_http(f"http://127.0.0.1:{a}/readyz")
    time.sleep(2.5)  # every instance has heartbeated (twice)
    runs: dict[str, list[dict[str, list[float]]]] = {side: [] for side in sides}
    for _ in range(rounds):
        got = asyncio.run(interleaved({side: f[0] for side, f in fleets.items()}, kills, gap))
        for side, res in got.items():
            runs[side].append(res)
    out: dict[str, dict[str, list[float]]] = {}
    for side, results in runs.items():
        gens = [g for res in results for g in res["gens"]]
        sent = [t for res in results for t in res["sent"]]
        kill_gens = {int(g) for res in results for g in res["kills"]}
        lags = lags_by_generation(fleets[side][1], gens, sent)
        out[side] = {"kill": [v for g, v in lags.items() if g in kill_gens],
                     "unkill": [v for g, v in lags.items() if g not in kill_gens],
                     "rtt": [x for res in results for x in res["rtt"]]}
    return out


async def stream_cut(port: int, admin: int, trials: int) -> list[float]:
    import aiohttp

    tok = mint(SECRET, "bench", "killgate:admin", 3600, "killgate", "killgate-admin")
    h = {"Authorization": f"Bearer {tok}"}
    cuts: list[float] = []
    async with aiohttp.ClientSession() as s:
        for i in range(trials):
            async with s.get(f"http://127.0.0.1:{port}/sse?n=1000") as r:
                await r.content.readuntil(b"\n\n")
                t0 = time.perf_counter()
                async with s.post(f"http://127.0.0.1:{admin}/v1/kill?wait=0s", headers=h, json={
                        "scope": "route", "route": "bench", "reason": f"cut {i}"}) as k:
                    assert k.status == 200, await k.text()
                while True:
                    line = await r.content.readline()
                    if line.startswith(b"event: killgate.error") or not line:
                        break
                cuts.append((time.perf_counter() - t0) * 1000)
            async with s.post(f"http://127.0.0.1:{admin}/v1/unkill?wait=1s", headers=h,
                              json={"scope": "route", "route": "bench", "reason": "next"}) as k:
                assert k.status == 200
    return cuts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--cuts", type=int, default=100)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--gap", type=float, default=0.02,
                    help="seconds between kill calls in (b) (default 0.02: each call finds "
                         "a quiet fleet); a second series always runs back to back")
    ap.add_argument("--propagation-only", action="store_true",
                    help="run (b) alone: skip the micro-benchmark, throughput and stream cuts")
    ap.add_argument("--signing", action="store_true",
                    help="run (d) alone: propagation with state signing vs without, same run")
    ap.add_argument("--raw", type=Path, default=None,
                    help="(b): also write every figure of the 20 ms-apart series as JSON here "
                         "(send times, each instance's applied_at by generation, the floor)")
    ap.add_argument("--slowlog", action="store_true",
                    help="(b), with --raw: every command redis runs in the 20 ms-apart series "
                         "logged (SLOWLOG at 0 µs: ~1 µs a command) and written to the raw "
                         "figures with INFO commandstats (kill_stages.py: the script's time)")
    ap.add_argument("--against", type=Path, default=None, metavar="TREE",
                    help="run (e) alone: (b)'s series for a fleet of this tree and one of the "
                         "source tree TREE (e.g. an export of main), calls interleaved")
    ap.add_argument("--rounds", type=int, default=6,
                    help="(d), (e): rounds of --kills calls per side, interleaved (default 6)")
    args = ap.parse_args()
    for tool in ("redis-server", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: apt-get install -y {tool}", file=sys.stderr)
            return 1
    tmp = Path(tempfile.mkdtemp(prefix="killgate-ks-bench-"))
    try:
        rport = free_port()
        PROCS.start(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no"], tmp / "redis.log")
        redis_url = f"redis://127.0.0.1:{rport}/0"
        bport = free_port()
        PROCS.start([sys.executable, str(ROOT / "benchmarks/backend.py"), "--port", str(bport),
               "--sse"], tmp / "backend.log")
        time.sleep(0.5)
        if args.signing:
            print("(d) propagation, signed vs unsigned fleets …", file=sys.stderr)
            sig = signing_overhead(tmp, bport, redis_url, args.kills, args.gap, args.rounds)
            PROCS.stop()
            shutil.rmtree(tmp, ignore_errors=True)
            print_signing(sig, args)
            return 0
        if args.against is not None:
            print("(e) propagation, this tree vs the other, and the floor …", file=sys.stderr)
            floor = measure_floor(rport, tmp, args.kills, args.gap)
            ab = side_by_side(tmp, bport, redis_url, {
                "this": tree_gateway(ROOT), "other": tree_gateway(args.against.resolve())},
                args.kills, args.gap, args.rounds)
            PROCS.stop()
            shutil.rmtree(tmp, ignore_errors=True)
            print_against(ab, floor, args)
            return 0
        mic: dict[str, float] = {}
        tp: dict[str, float] = {}
        if not args.propagation_only:
            print("(a) micro-benchmark …", file=sys.stderr)
            mic = micro()
            print("(a) throughput, in-memory check vs naive GET per request …", file=sys.stderr)
            tp = throughput(tmp, bport, redis_url, args.duration)
        print("(b) the floor: the same hops without killgate's work …", file=sys.stderr)
        floor = measure_floor(rport, tmp, args.kills, args.gap)
        print("(b) propagation over 3 instances …", file=sys.stderr)
        admins, ports = [], []
        for name in ("a", "b", "c"):
            cfg, port, admin = gateway_config(tmp, name, bport, redis_url)
            PROCS.start([sys.executable, "-m", "gateway", "serve", "-c", str(cfg)], tmp / f"{name}.log")
            admins.append(admin)
            ports.append(port)
        for a in admins:
            wait_http(f"http://127.0.0.1:{a}/readyz")
        time.sleep(2.5)  # every instance has heartbeated (twice)
        logs = [tmp / f"{n}.log" for n in ("a", "b", "c")]
        burst = asyncio.run(propagation(admins, args.kills, 0.0))
        burst_lags = enforcement_lags(logs, burst["gens"], burst["sent"])
        if args.slowlog:
            _slowlog(redis_url, on=True)
        prop = asyncio.run(propagation(admins, args.kills, args.gap))
        redis_side = _slowlog(redis_url, on=False) if args.slowlog else {}
        lags = enforcement_lags(logs, prop["gens"], prop["sent"])
        by_kind = split_lags(logs, prop)
        if args.raw is not None:
            args.raw.write_text(json.dumps({"floor": floor, "series": prop, "applied": {
                name: applied_times(log) for name, log in zip("abc", logs, strict=True)},
                "redis": redis_side}))
        cuts: list[float] = []
        if not args.propagation_only:
            print("(c) in-flight stream cut …", file=sys.stderr)
            cuts = asyncio.run(stream_cut(ports[0], admins[0], args.cuts))
    finally:
        PROCS.stop()
    shutil.rmtree(tmp, ignore_errors=True)  # kept (logs and all) when the run failed
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    print(f"\nkillgate kill-switch benchmarks — {time.strftime('%Y-%m-%d %H:%M')} — "
          f"commit {commit} — Python {sys.version.split()[0]} — {os.cpu_count()} CPUs\n")
    rows: list[tuple[str, str]] = []
    if mic:
        cost = 1 - tp["naive_redis_get"] / tp["in_memory"]
        rows += [
            ("(a) routing decision, table with 51 kills", f"{mic['decision_with_kills_ns']:.0f} ns"),
            ("(a) routing decision, no kills", f"{mic['decision_without_kills_ns']:.0f} ns"),
            ("(a) the kill check itself (precomputed flag)",
             f"{mic['killed_attr_check_ns']:.1f} ns"),
            ("(a) bare dict lookup, for scale", f"{mic['dict_lookup_ns']:.1f} ns"),
            ("(a) gateway req/s, in-memory check (wrk -c32)", f"{tp['in_memory']:.0f}"),
            ("(a) gateway req/s, naive redis GET per request", f"{tp['naive_redis_get']:.0f}"),
            ("(a) throughput a naive GET would cost", f"{cost * 100:.1f} %"),
        ]
    rows += [
        *((f"(b) {kind} call sent → applied by all 3 instances, n={len(xs)}, p50 / p99",
           f"{statistics.median(xs):.2f} / {pct(xs, 0.99):.2f} ms")
          for kind, xs in by_kind.items()),
        (f"(b) API call sent → applied by all 3 instances (kills and unkills), n={len(lags)}, "
         "p50 / p99", f"{statistics.median(lags):.2f} / {pct(lags, 0.99):.2f} ms"),
        (f"(b) the same, calls back to back (no gap), n={len(burst_lags)}, p50 / p99",
         f"{statistics.median(burst_lags):.2f} / {pct(burst_lags, 0.99):.2f} ms"),
        *((f"(b) floor: {label}, n={len(xs)}, p50 / p99",
           f"{statistics.median(xs):.2f} / {pct(xs, 0.99):.2f} ms") for label, xs in floor.items()),
        (f"(b) kill API round trip, 3 instances, n={len(prop['rtt'])}, p50 / p99",
         f"{statistics.median(prop['rtt']):.2f} / {pct(prop['rtt'], 0.99):.2f} ms"),
        ("(b) receipt elapsed_ms (commit → all acked), p50 / p99",
         f"{statistics.median(prop['receipt']):.2f} / {pct(prop['receipt'], 0.99):.2f} ms"),
        ("(b) calls answered with every instance acked",
         f"{prop['acked_all'][0]:.0f} / {len(prop['rtt'])} (instances {prop['instances'][0]:.0f})"),
    ]
    if cuts:
        rows.append((f"(c) kill call → killgate.error at the client, n={len(cuts)}, p50 / p99",
                     f"{statistics.median(cuts):.2f} / {pct(cuts, 0.99):.2f} ms"))
    w = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(w)} | value |\n|{'-' * (w + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(w)} | {v} |")
    print(json.dumps({"micro": mic, "throughput": tp}), file=sys.stderr)
    return 0


def print_signing(sig: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    print(f"\nkillgate state signing — {time.strftime('%Y-%m-%d %H:%M')} — commit {commit} — "
          f"Python {sys.version.split()[0]} — {os.cpu_count()} CPUs — {args.rounds} rounds of "
          f"{args.kills} calls per side, {args.gap * 1000:g} ms apart\n")
    rows = []
    for kind in ("kill", "unkill"):
        for side in ("unsigned", "signed"):
            xs = sig[side][kind]
            rows.append((f"(d) {kind} sent → applied by all 3, {side}, n={len(xs)}, p50 / p99",
                         f"{statistics.median(xs):.2f} / {pct(xs, 0.99):.2f} ms"))
        a, b = statistics.median(sig["unsigned"][kind]), statistics.median(sig["signed"][kind])
        rows.append((f"(d) {kind} p50, signed vs unsigned", f"{(b / a - 1) * 100:+.1f} %"))
    for side in ("unsigned", "signed"):
        xs = sig[side]["rtt"]
        rows.append((f"(d) API round trip (receipt: all 3 acked), {side}, p50 / p99",
                     f"{statistics.median(xs):.2f} / {pct(xs, 0.99):.2f} ms"))
    w = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(w)} | value |\n|{'-' * (w + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(w)} | {v} |")


def print_against(ab: dict[str, dict[str, list[float]]], floor: dict[str, list[float]],
                  args: argparse.Namespace) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    print(f"\nkillgate kill propagation, two trees — {time.strftime('%Y-%m-%d %H:%M')} — "
          f"this: {ROOT} ({commit}), other: {args.against} — {args.rounds} rounds of "
          f"{args.kills} calls per side, {args.gap * 1000:g} ms apart, interleaved call by call\n")
    rows = []
    for kind in ("kill", "unkill", "rtt"):
        for side in ("other", "this"):
            xs = ab[side][kind]
            what = "API round trip" if kind == "rtt" else f"{kind} sent → applied by all 3"
            rows.append((f"(e) {what}, {side}, n={len(xs)}, p50 / p90 / p99",
                         f"{statistics.median(xs):.2f} / {pct(xs, 0.9):.2f} / "
                         f"{pct(xs, 0.99):.2f} ms"))
        a, b = statistics.median(ab["other"][kind]), statistics.median(ab["this"][kind])
        rows.append((f"(e) {kind} p50, this minus other", f"{b - a:+.2f} ms"))
    rows += [(f"(e) floor: {label}, n={len(xs)}, p50 / p99",
              f"{statistics.median(xs):.2f} / {pct(xs, 0.99):.2f} ms")
             for label, xs in floor.items()]
    w = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(w)} | value |\n|{'-' * (w + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(w)} | {v} |")


if __name__ == "__main__":
    raise SystemExit(main())
