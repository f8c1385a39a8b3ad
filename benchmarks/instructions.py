"""Instructions per request, per telemetry variant, side by side in one run (callgrind).

    .venv/bin/python benchmarks/instructions.py [--requests 2000] [--rounds 3]
        [--variants off,0%,1%] [--before REV] [--keep DIR]

CPU time per request swings with the load of a shared machine; the number of instructions
a request executes does not. Each variant is a real `killgate serve` (1 worker) run under
`valgrind --tool=callgrind`, started uninstrumented (fast) and all at once; then, one
variant at a time: instrumentation on, a warm-up, and per round

1. the idle rate, before and after the batch: counters zeroed, `--idle` seconds without
   requests, a dump (timers and background tasks run by the wall clock, and a process under
   valgrind is ~50x slower, so their mean is subtracted, pro rata of the batch's wall time;
   the state store is a Redis polled once a minute, to keep that work small). One exchange
   is held in flight for the whole measurement, idle and batch alike (a request on route
   `held` to a backend that takes it and never answers): the upstream deadline sweeper
   (`Upstreams._sweep`) beats every 10 ms while an exchange waits and every 50 ms when none
   does, so an idle rate measured with none in flight subtracted the slow beat from a batch
   that ran at the fast one, and over-counted by an amount growing with the batch's wall
   time (the machine's load: RESULTS.md §31's caveat);
2. the batch: counters zeroed, `--requests` POSTs (a KServe V2 body) over `--connections`
   keep-alive connection(s) from this process (one by default: with several, how many
   requests share an event-loop iteration depends on the machine's load, and so does the
   count, by a few per cent), then, for tracing variants, a wait until the
   OTLP sink has had no new span for `--settle` seconds (so the exporter thread's batches
   are counted too), and a dump.

Instructions per request = (batch - idle Ir per Task step * the batch's Task steps) /
requests, all threads of the gateway process (event loop, exporter, access-log writer). The
clock's work comes in the event loop's Task steps (the C `task_step`, counted by callgrind;
a request itself takes none), and a process starved of the CPU by the machine's load takes
fewer of them per wall second, so it is subtracted per step, not per wall second of the
batch (which over-subtracted in slow rounds: rounds of 1.1-4.4 s agree within 0.3 % per
step, 6 % per second; each round also prints the per-second figure). The backend
(`benchmarks/backend.py`), the OTLP sink (`benchmarks/otlp_sink.py`) and the client run
natively, outside valgrind. Variants:

* `no-metrics` — `telemetry.metrics.request_series: false`: no per-request recording;
* `off` — the defaults: request metrics and histograms on, tracing off;
* `log` — `off` + `server.access_log: true` (every request, to a file);
* `log0` — the access log on, `sample_ratio: 0`: what the request path pays for it (the
  fields it reads, the sampling), without the lines;
* `0%` / `1%` / `100%` — `off` + tracing to the sink at that `traces.sample_ratio`
  (OTLP metrics off); `0%` is the unsampled path on every request;
* `otlp-metrics` — `off` + OTLP metrics pushed every second (tracing off): its cost is per
  export, so it shows in the idle rate, not per request;
* `worker` — `off` run as worker 0 of a `serve --workers N` group, as the supervisor
  starts one (`--worker-index 0 --reuse-port --metrics-dir DIR`): the same request path, plus
  the group's metric snapshot every second (telemetry/workers.py), which shows in the idle rate.

`--before REV` runs every variant on that revision too (a temporary git worktree, same
venv), so a change is measured before and after in one run. `--keep DIR` keeps the
callgrind files (`callgrind_annotate DIR/<file>` shows where the instructions go).
`--header 'NAME: VALUE'` adds a field to every request (http.client sends none but Host,
Accept-Encoding and the framing; httpx, requests and aiohttp send `Connection: keep-alive`).
Needs valgrind (`apt-get install -y valgrind`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from _procs import Procs, bench_config, free_port, start_backend, wait_http
from harness import REQUEST_BODY as BODY

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("no-metrics", "off", "log", "log0", "0%", "1%", "100%", "otlp-metrics", "worker")
RATIO = {"0%": 0.0, "1%": 0.01, "100%": 1.0}


@dataclass
class Gateway:
    name: str  # variant, or "variant@before"
    variant: str
    work: Path
    port: int = 0
    admin: int = 0
    pid: int = 0
    dumps: int = 0
    rows: list[tuple[float, float, float]] = field(default_factory=list)  # Ir/req, idle Ir/s, sampled


def config(gw: Gateway, backend: int, sink: int, redis: int,
           mute: int) -> tuple[Path, dict[str, str]]:
    v = gw.variant
    server = "access_log: true" if v in ("log", "log0") else ""
    cfg = bench_config(gw.work, gw.port, gw.admin, backend, server=server)
    # A Redis store polled once a minute: the local store's file watch polls every 25 ms,
    # work that runs by the clock, and under valgrind the clock runs long (see `measure`).
    state = (f"state: {{backend: redis, url: 'redis://127.0.0.1:{redis}/0', prefix: "
             f"'{gw.name.replace('%', 'pct').replace('@', '.')}', signing_key_env: "
             "KILLGATE_STATE_KEY, poll_interval: 60s, heartbeat_interval: 60s, "
             "max_staleness: 3600s, instance_lease: 3600s, command_timeout: 30s, "
             f"snapshot_path: {gw.work}/snap.json}}")
    env: dict[str, str] = {}
    tele = ""
    if v == "no-metrics":
        tele = "telemetry: {metrics: {request_series: false}}\n"
    elif v in ("log", "log0"):
        ratio = 1.0 if v == "log" else 0.0
        tele = (f"telemetry: {{access_log: {{path: {gw.work}/access.jsonl, "
                f"sample_ratio: {ratio}}}}}\n")
    elif v in RATIO:
        tele = (f"telemetry: {{otlp_endpoint: 'http://127.0.0.1:{sink}', "
                f"traces: {{sample_ratio: {RATIO[v]}}}}}\n")
        env["OTEL_METRICS_EXPORTER"] = "none"
    elif v == "otlp-metrics":
        tele = (f"telemetry: {{otlp_endpoint: 'http://127.0.0.1:{sink}', "
                "metrics: {export_interval: 1s}}\n")
        env["OTEL_TRACES_EXPORTER"] = "none"
    text = "\n".join(state if line.startswith("state:") else line
                     for line in cfg.read_text().splitlines())
    # route `held`, first: the exchange `Held` keeps in flight (a backend that never answers)
    held = (f"routes:\n  - name: held\n    match: {{path_prefix: {HELD}}}\n    stable: v1\n"
            "    timeouts: {total: 3600s, idle: 3600s}\n"
            f"    versions:\n      - {{name: v1, url: 'http://127.0.0.1:{mute}', weight: 100}}")
    cfg.write_text(text.replace("routes:", tele + held, 1) + "\n")
    return cfg, env


HELD = "/held/"


class Mute:
    """A backend that accepts connections and reads requests but never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._read, args=(c,), daemon=True).start()

    def _read(self, c: socket.socket) -> None:
        try:
            while c.recv(65536):
                self.received.set()
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def hold(gw: Gateway, mute: Mute) -> socket.socket:
    """One request in flight through `gw` to `mute` (it stays there: the sweeper's busy beat)."""
    mute.received.clear()
    c = socket.create_connection(("127.0.0.1", gw.port), timeout=300)
    c.sendall(f"GET {HELD}x HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    if not mute.received.wait(300):
        raise SystemExit(f"{gw.name}: the held request never reached its backend")
    return c


def control(gw: Gateway, *flags: str) -> None:
    subprocess.run(["callgrind_control", *flags, str(gw.pid)], check=True, capture_output=True,
                   timeout=120)


def dump(gw: Gateway) -> tuple[int, int]:
    """Dump the counters since the last zero; their instruction count and the event loop's
    Task steps (calls of the C `task_step`: the clock's work, the sweeper's beats among it)."""
    control(gw, "-d")
    gw.dumps += 1
    out = gw.work / f"callgrind.out.{gw.dumps}"
    names: dict[str, str] = {}
    ir, steps, callee = -1, 0, ""
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith(("fn=(", "cfn=(")):
            key, _, name = line.partition("=")[2].partition(" ")
            if name:
                names[key] = name
            if line.startswith("cfn="):
                callee = names.get(key, "")
        elif line.startswith("calls=") and callee == "task_step":
            steps += int(line.split()[0][6:])
        elif line.startswith("summary:"):
            ir = int(line.split()[1])
    if ir < 0:
        raise SystemExit(f"no summary in {out}")
    return ir, steps


def send(port: int, n: int, conns: int, extra: dict[str, str] | None = None) -> None:
    """`n` POSTs over `conns` keep-alive connections in parallel; every answer must be 200.
    `extra`: fields each request carries besides http.client's (`--header`)."""
    errors: list[str] = []

    def worker(count: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            for _ in range(count):
                c.request("POST", "/v2/models/m/infer", BODY,
                          {"content-type": "application/json", **(extra or {})})
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    errors.append(f"status {r.status}")
        except OSError as exc:
            errors.append(repr(exc))
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(n // conns + (i < n % conns),))
               for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"requests failed: {errors[:3]}")


def start_redis(procs: Procs, log: Path) -> int:
    port = free_port()
    procs.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"], log)
    deadline = time.monotonic() + 15
    while subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True,
                         text=True).stdout.strip() != "PONG":
        if time.monotonic() > deadline:
            raise SystemExit("redis-server did not start")
        time.sleep(0.05)
    return port


@dataclass(frozen=True)
class Idle:
    per_second: float
    per_step: float  # instructions per Task step (0: no step counted)


def idle_rate(gw: Gateway, seconds: float) -> Idle:
    """The clock's work with no request (timers, background tasks): per second, and per Task
    step of the event loop."""
    control(gw, "-z")
    t0 = time.monotonic()
    time.sleep(seconds)
    ir, steps = dump(gw)
    return Idle(ir / (time.monotonic() - t0), ir / steps if steps else 0.0)


def sink_spans(sink: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{sink}/", timeout=10) as r:
        return int(json.loads(r.read())["spans"])


def settle(sink: int, quiet: float) -> int:
    """Wait until the sink has received no span for `quiet` seconds; its span count."""
    last, since = sink_spans(sink), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.25)
        now = sink_spans(sink)
        if now != last:
            last, since = now, time.monotonic()
    return last


def measure(gw: Gateway, args: argparse.Namespace, sink: int, mute: Mute) -> None:
    traced = RATIO.get(gw.variant, 0.0) > 0
    control(gw, "-i", "on")  # instrumentation on (it starts off, so start-up runs fast)
    send(gw.port, args.warmup, args.connections, args.fields)
    held = hold(gw, mute) if not args.no_hold else None
    try:
        rounds(gw, args, sink, traced)
    finally:
        if held is not None:
            held.close()


def rounds(gw: Gateway, args: argparse.Namespace, sink: int, traced: bool) -> None:
    if traced:
        settle(sink, args.settle)
    before = idle_rate(gw, args.idle)
    for r in range(args.rounds):
        spans0 = sink_spans(sink)
        control(gw, "-z")
        t0 = time.monotonic()
        send(gw.port, args.requests, args.connections, args.fields)
        spans = settle(sink, args.settle) - spans0 if traced else 0
        total, steps = dump(gw)
        wall = time.monotonic() - t0
        after = idle_rate(gw, args.idle)  # (also the next round's "before")
        rate = (before.per_second + after.per_second) / 2
        per_step = (before.per_step + after.per_step) / 2
        before = after
        by_wall = (total - rate * wall) / args.requests
        # The clock's work comes in Task steps, and a process the machine's load starves of
        # the CPU takes fewer of them a wall second (a timer late by 30 ms fires once, not
        # three times): subtracted per step counted in the batch, not per wall second, the
        # figure no longer depends on the batch's wall time (RESULTS.md §31).
        per = (total - per_step * steps) / args.requests if per_step else by_wall
        # a sampled request is a SERVER span and one CLIENT span
        gw.rows.append((per, rate, spans / 2 / args.requests))
        print(f"{gw.name:>20} round {r + 1}: {per:10,.0f} Ir/req  (batch {total:,} Ir in "
              f"{wall:.1f} s, {steps} Task steps, idle {per_step:,.0f} Ir a step, "
              f"{rate:,.0f} Ir/s; idle subtracted per second instead: {by_wall:,.0f}; "
              f"sampled {spans // 2})", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--connections", type=int, default=1,
                    help="keep-alive connections sending in parallel (1: a request's "
                         "instructions do not depend on how many others share its loop "
                         "iteration, which the machine's load would decide)")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of the idle measurement")
    ap.add_argument("--settle", type=float, default=6.0,
                    help="seconds without a new span that mean the exporter is done (more "
                         "than OTEL_BSP_SCHEDULE_DELAY, 5 s by default)")
    ap.add_argument("--no-hold", action="store_true",
                    help="hold no exchange in flight (the old measurement: the idle rate "
                         "at the sweeper's slow beat, which under-subtracts)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="a comma-separated subset of " + ", ".join(VARIANTS).replace("%", "%%"))
    ap.add_argument("--before", default=None, metavar="REV",
                    help="also run every variant on this git revision (before a change)")
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="keep the callgrind files here")
    ap.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                    help="a field every request carries too (again for more): a real "
                         "client's, e.g. 'Connection: keep-alive' (httpx, requests, aiohttp)")
    args = ap.parse_args()
    args.fields = dict(h.split(":", 1) for h in args.header)
    args.fields = {k.strip(): v.strip() for k, v in args.fields.items()}
    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    for tool in ("valgrind", "callgrind_control", "redis-server", "redis-cli") + (
            ("git",) if args.before else ()):
        if shutil.which(tool) is None:
            print(f"benchmarks/instructions.py needs {tool} (apt-get install -y valgrind "
                  "redis-server)", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="killgate-instructions-") as tmp:
        root = Path(tmp)
        trees = {"": ROOT}
        if args.before:
            trees["@before"] = root / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(trees["@before"]),
                            args.before], cwd=ROOT, check=True, capture_output=True)
        procs = Procs()
        gws: list[Gateway] = []
        mute = Mute()
        try:
            backend = start_backend(procs, root / "backend.log", 0.0)
            redis = start_redis(procs, root / "redis.log")
            sink = free_port()
            procs.start([sys.executable, str(Path(__file__).with_name("otlp_sink.py")),
                         "--port", str(sink)], root / "sink.log")
            wait_http(f"http://127.0.0.1:{sink}/")
            for v in variants:
                for suffix, tree in trees.items():
                    gw = Gateway(v + suffix, v, root / f"{v.strip('%')}{suffix}")
                    gw.work.mkdir()
                    gw.port, gw.admin = free_port(), free_port()
                    cfg, env = config(gw, backend, sink, redis, mute.port)
                    group: list[str] = []
                    if v == "worker":
                        (gw.work / "run").mkdir(mode=0o700)
                        group = ["--worker-index", "0", "--reuse-port", "--metrics-dir",
                                 str(gw.work / "run"), "--data-port", str(gw.port),
                                 "--admin-port", str(gw.admin)]
                    p = procs.start(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                     f"--callgrind-out-file={gw.work}/callgrind.out",
                                     # -P: not the working directory first on sys.path
                                     # (it held ROOT's gateway: --before measured ROOT twice)
                                     sys.executable, "-P", "-m", "gateway", "serve", "-c",
                                     str(cfg), *group],
                                    gw.work / "gateway.log", env=dict(env, PYTHONPATH=str(tree)))
                    gw.pid = p.pid
                    gws.append(gw)
            for gw in gws:
                wait_http(f"http://127.0.0.1:{gw.admin}/readyz", timeout=900)
            print(f"{len(gws)} gateways ready under callgrind", file=sys.stderr, flush=True)
            for gw in gws:
                measure(gw, args, sink, mute)
        finally:
            procs.stop()
            mute.close()
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                for gw in gws:
                    for f in gw.work.glob("callgrind.out*"):
                        shutil.copy(f, args.keep / f"{gw.name.replace('%', 'pct')}.{f.name}")
            if args.before:
                subprocess.run(["git", "worktree", "remove", "--force", str(trees["@before"])],
                               cwd=ROOT, capture_output=True)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}: {args.requests} requests x {args.rounds} "
          f"rounds per variant, {args.connections} connections, callgrind (valgrind "
          "instruction counts, all threads, idle work per Task step subtracted, "
          f"{'no' if args.no_hold else 'one'} exchange held in flight)\n")
    med = {gw.name: statistics.median(r[0] for r in gw.rows) for gw in gws}
    print("| variant | Ir/request (median) | vs off | rounds | idle Ir/s | sampled |")
    print("|---|---|---|---|---|---|")
    for gw in gws:
        base = med.get("off" + gw.name[len(gw.variant):])
        vs = "" if base is None else (f"{med[gw.name] - base:+,.0f} "
                                      f"({med[gw.name] / base - 1:+.1%})")
        each = " / ".join(f"{r[0]:,.0f}" for r in gw.rows)
        idle = statistics.median(r[1] for r in gw.rows)
        sampled = statistics.median(r[2] for r in gw.rows)
        print(f"| {gw.name} | {med[gw.name]:,.0f} | {vs} | {each} | {idle:,.0f} | "
              f"{sampled:.2%} |")
    for suffix in sorted({gw.name[len(gw.variant):] for gw in gws}):
        off, zero, full = (med.get(v + suffix) for v in ("off", "0%", "100%"))
        if off and zero and full:
            est = zero - off + 0.01 * (full - zero)
            print(f"\n1% at a request rate where the exporter's batches are full{suffix}: "
                  f"0% + 1% of a sampled request's cost = {est:+,.0f} Ir ({est / off:+.1%}) "
                  "(the 1% row above also pays one OTLP POST per batch of the few spans "
                  "a slow process under valgrind samples in 5 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
