"""Data-plane benchmark: killgate vs nginx vs the backend alone, loaded with wrk.

    .venv/bin/python benchmarks/harness.py [--duration 10] [--connections 1,16,64] [--quick]

Every side runs in its own process on 127.0.0.1 and a free port, started and stopped here
(also on Ctrl-C or an error): the tiny backend (benchmarks/backend.py, 0 ms and 5 ms
answer delay), `killgate serve` with 1 and 2 workers, nginx with 1 and 2 workers, and wrk
as the load generator (a small JSON POST, --latency). For each (delay, connections) it
reports req/s, p50, p99, errors and the proxy's CPU time per request, plus ratios against
the direct run and against nginx with the same worker count. A second, small table
reports SSE time-to-first-event (direct / killgate 1 worker / nginx 1 worker).

Pinning (if `taskset` exists and there are >= 2 CPUs): 1-worker runs pin the proxy to
CPU 0 and wrk + backend to CPU 1 (the direct run uses the same wrk + backend placement);
2-worker runs pin nothing. CPU time is utime+stime from /proc/<pid>/stat summed over the
proxy's whole process tree (supervisor + workers, nginx master + workers), read right
before and right after the measured wrk run.

Only the standard library plus aiohttp/uvloop (in the SSE client process) are used.
The report is printed and written as Markdown to benchmarks/out/latest.md; raw wrk
outputs and the proxies' logs go to benchmarks/out/raw/ and benchmarks/out/logs/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import multiprocessing
import os
import platform
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
BACKEND_SCRIPT = BENCH_DIR / "backend.py"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXY_CPU = 0
CLIENT_CPU = 1
DELAYS_MS = (0, 5)
REQUEST_BODY = ('{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32",'
                '"data":[6.1,2.8,4.7,1.2]}]}')
WRK_SCRIPT = f"""wrk.method = "POST"
wrk.body = '{REQUEST_BODY}'
wrk.headers["Content-Type"] = "application/json"
"""
DIRECT = "direct"


# ======================================================================== small helpers


def log(msg: str) -> None:
    """Progress goes to stderr so that stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 50 samples is the largest one)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def which(name: str) -> str | None:
    """shutil.which, also looking in the sbin folders a non-login PATH may lack."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def http_get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """GET without proxies; (status, body), status 0 when nothing answered."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, ValueError):
        return 0, b""


# ======================================================================== CPU accounting


def process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants, via /proc/<pid>/task/<tid>/children."""
    tree = [pid]
    i = 0
    while i < len(tree):
        try:
            tids = os.listdir(f"/proc/{tree[i]}/task")
        except OSError:
            tids = []
        for tid in tids:
            try:
                children = Path(f"/proc/{tree[i]}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            tree.extend(int(c) for c in children if int(c) not in tree)
        i += 1
    return tree


def cpu_seconds(pid: int) -> float:
    """utime+stime of `pid` and its live descendants, in seconds."""
    ticks = 0
    for p in process_tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state)
        ticks += int(fields[11]) + int(fields[12])  # fields 14 (utime) and 15 (stime)
    return ticks / CLK_TCK


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) of the whole machine from /proc/stat, in seconds.

    busy = user+nice+system+irq+softirq: a task's stime includes the softirq work done in
    its context (loopback TCP), which /proc/stat books under softirq.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, irq, softirq, steal = (int(fields[i]) for i in (0, 1, 2, 5, 6, 7))
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def reaped_children_cpu_seconds() -> float:
    """CPU of this process plus its reaped children (wrk once subprocess.run returns)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class CpuSample:
    """What the measured run is charged with: the proxy, our other processes, the machine."""

    proxy: float
    backend: float
    ours: float
    machine: float
    steal: float
    at: float

    @classmethod
    def take(cls, proxy_pid: int | None, backend_pid: int) -> CpuSample:
        machine, steal = machine_cpu_seconds()
        return cls(cpu_seconds(proxy_pid) if proxy_pid else 0.0, cpu_seconds(backend_pid),
                   reaped_children_cpu_seconds(), machine, steal, time.monotonic())


def noise_percent(before: CpuSample, after: CpuSample) -> float:
    """CPU used outside the benchmark's processes, plus steal, in % of one CPU."""
    ours = sum(getattr(after, f) - getattr(before, f) for f in ("proxy", "backend", "ours"))
    other = (after.machine - before.machine) - ours + (after.steal - before.steal)
    return max(0.0, other) / max(after.at - before.at, 1e-9) * 100


# ======================================================================== pinning


@dataclass(frozen=True)
class Pinning:
    """Where the proxy and the client side (wrk + backend + SSE client) may run."""

    proxy: frozenset[int] | None
    client: frozenset[int] | None

    @property
    def pinned(self) -> bool:
        return self.proxy is not None


ALL_CPUS = frozenset(os.sched_getaffinity(0))
TASKSET = which("taskset")
PIN_1W = (Pinning(frozenset({PROXY_CPU}), frozenset({CLIENT_CPU}))
          if TASKSET and {PROXY_CPU, CLIENT_CPU} <= ALL_CPUS else Pinning(None, None))
NO_PIN = Pinning(None, None)


def cpu_list(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def with_taskset(argv: list[str], cpus: frozenset[int] | None) -> list[str]:
    """taskset execs the command, so the pid we get is the pinned program itself."""
    if cpus is None or TASKSET is None:
        return argv
    return [TASKSET, "-c", cpu_list(cpus), *argv]


def repin(pid: int, cpus: frozenset[int] | None) -> None:
    """Move a running process (all its threads) to `cpus`, or back to every CPU."""
    if TASKSET is None:
        return
    target = cpus if cpus is not None else ALL_CPUS
    subprocess.run([TASKSET, "-a", "-p", "-c", cpu_list(target), str(pid)],
                   check=True, stdout=subprocess.DEVNULL)


# ======================================================================== processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        rc = self.popen.poll()
        if rc is not None:
            raise RuntimeError(f"{self.name} exited with code {rc}; log {self.log_path}:\n"
                               f"{tail(self.log_path)}")


class Processes:
    """Every process we start, each in its own session; stopped by process group."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: list[Proc] = []

    def start(self, name: str, argv: list[str], cpus: frozenset[int] | None = None,
              stdout_pipe: bool = False, env: dict[str, str] | None = None) -> Proc:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as logf:
            popen = subprocess.Popen(
                with_taskset(argv, cpus), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else logf, stderr=logf,
                start_new_session=True, cwd=self.workdir, env=env)
        proc = Proc(name, popen, log_path)
        self.running.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still there."""
        if proc in self.running:
            self.running.remove(proc)
        if proc.popen.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{proc.name} did not stop in {timeout:g}s: SIGKILL")
                self._signal_group(proc, signal.SIGKILL)
                proc.popen.wait(5)
        # Workers left behind by a dead parent are still in the group.
        self._signal_group(proc, signal.SIGKILL)
        if proc.popen.stdout is not None:
            proc.popen.stdout.close()

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)

    @staticmethod
    def _signal_group(proc: Proc, sig: signal.Signals) -> None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # start_new_session: the group id is the pid


def wait_until(what: str, ready: Callable[[], bool], procs: Sequence[Proc], deadline_s: float = 30.0) -> None:
    """Poll `ready()` until true; fail early if one of `procs` died."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for proc in procs:
            proc.check_alive()
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {deadline_s:g}s")


# ======================================================================== the sides


@dataclass
class Server:
    """Something wrk can load: the backend itself or a proxy in front of it."""

    side: str
    proc: Proc
    port: int
    workers: int = 1
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"


def start_backend(procs: Processes, delay_ms: int) -> Server:
    port = free_port()
    argv = [sys.executable, str(BACKEND_SCRIPT), "--port", str(port),
            "--delay-ms", str(delay_ms), "--sse"]
    proc = procs.start(f"backend-{delay_ms}ms", argv, stdout_pipe=True)
    assert proc.popen.stdout is not None
    fd = proc.popen.stdout.fileno()
    deadline = time.monotonic() + 15
    line = b""
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        proc.check_alive()
        if select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 64)
            if not chunk:
                break
            line += chunk
    if line.strip() != b"ready":
        proc.check_alive()
        raise RuntimeError(f"backend did not print 'ready' (got {line!r})")
    return Server(DIRECT, proc, port, logs=[proc.log_path])


def killgate_config(workdir: Path, port: int, admin_port: int, backend_port: int) -> str:
    return f"""listen: {HOST}:{port}
admin: {{listen: {HOST}:{admin_port}}}
state: {{backend: local, path: {workdir}/store.json, snapshot_path: {workdir}/snap.json}}
log: {{level: warning}}
server: {{drain_timeout: 2s}}
routes:
  - name: bench
    match: {{path_prefix: /}}
    stable: v1
    versions:
      - {{name: v1, url: "http://{HOST}:{backend_port}", weight: 100}}
"""


def killgate_binary() -> str:
    local = Path(sys.executable).parent / "killgate"
    if local.exists():
        return str(local)
    found = which("killgate")
    if found is None:
        raise RuntimeError("killgate is not installed in this Python environment")
    return found


def start_killgate(procs: Processes, tmp: Path, backend_port: int, workers: int,
                   cpus: frozenset[int] | None) -> Server:
    workdir = tmp / f"killgate-{workers}w-{free_port()}"
    workdir.mkdir()
    port, admin_port = free_port(), free_port()
    cfg = workdir / "killgate.yaml"
    cfg.write_text(killgate_config(workdir, port, admin_port, backend_port))
    argv = [killgate_binary(), "serve", "-c", str(cfg)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    # A throwaway admin token secret: without one killgate logs an error at startup
    # (admin_auth_not_configured). The benchmark never calls the authenticated API.
    env = dict(os.environ)
    env.setdefault("KILLGATE_JWT_SECRET", secrets.token_urlsafe(48))
    proc = procs.start(f"killgate-{workers}w", argv, cpus, env=env)
    instances: set[str] = set()

    def ready() -> bool:
        # Each GET is a new connection, which SO_REUSEPORT hashes onto some worker:
        # wait until every worker has answered 200 on /readyz.
        status, body = http_get(f"http://{HOST}:{admin_port}/readyz", timeout=0.5)
        if status == 200:
            instances.add(str(json.loads(body).get("instance")))
        return len(instances) >= workers

    wait_until(f"killgate ({workers} worker(s)) /readyz", ready, [proc])
    return Server(f"killgate {workers}w", proc, port, workers, logs=[proc.log_path])


def nginx_config(prefix: Path, port: int, backend_port: int, workers: int) -> str:
    return f"""worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    upstream b {{
        server {HOST}:{backend_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {HOST}:{port} reuseport;
        location / {{
            proxy_pass http://b;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /sse {{
            proxy_pass http://b;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def start_nginx(procs: Processes, tmp: Path, nginx: str, backend_port: int, workers: int,
                cpus: frozenset[int] | None) -> Server:
    prefix = tmp / f"nginx-{workers}w-{free_port()}"
    prefix.mkdir()
    prefix.chmod(0o755)  # workers may run as an unprivileged user
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, port, backend_port, workers))
    argv = [nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log"),
            "-g", "daemon off;"]
    proc = procs.start(f"nginx-{workers}w", argv, cpus)

    def ready() -> bool:
        status, _ = http_get(f"http://{HOST}:{port}/", timeout=0.5)
        return status == 200 and len(process_tree(proc.pid)) - 1 >= workers

    wait_until(f"nginx ({workers} worker(s))", ready, [proc])
    return Server(f"nginx {workers}w", proc, port, workers,
                  logs=[proc.log_path, prefix / "error.log"])


# ======================================================================== wrk


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non2xx: int
    socket_errors: dict[str, int]
    raw: str

    @property
    def error_count(self) -> int:
        return self.non2xx + sum(self.socket_errors.values())

    def errors_text(self) -> str:
        parts = [f"non2xx {self.non2xx}"] if self.non2xx else []
        parts += [f"{k} {v}" for k, v in self.socket_errors.items() if v]
        return ", ".join(parts) if parts else "0"


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def to_ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def parse_wrk(out: str) -> WrkResult:
    """Requests/s, the --latency percentile table, totals and error lines of wrk 4."""
    pcts = {m.group(1): to_ms(m.group(2), m.group(3)) for m in re.finditer(
        r"^\s+(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.MULTILINE)}
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in ", out, re.MULTILINE)
    if rps is None or total is None or "50" not in pcts or "99" not in pcts:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                             (int(g) for g in sock.groups()), strict=True)) if sock else {}
    return WrkResult(float(rps.group(1)), pcts["50"], pcts["99"], int(total.group(1)),
                     int(non2xx.group(1)) if non2xx else 0, socket_errors, out)


def run_wrk(wrk: str, script: Path, url: str, connections: int, duration_s: float,
            cpus: frozenset[int] | None) -> WrkResult:
    threads = 2 if connections >= 64 else 1
    argv = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration_s:g}s",
            "--timeout", "5s", "--latency", "-s", str(script), url]
    done = subprocess.run(with_taskset(argv, cpus), capture_output=True, text=True,
                          timeout=duration_s + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    return parse_wrk(done.stdout)


# ======================================================================== SSE client


def sse_client(url: str, n: int, cpus: list[int] | None) -> dict[str, Any]:
    """Runs in a spawned process: `n` sequential GETs of an SSE stream (plus one warm-up).

    Returns ms from sending each request to its first complete event, and to its end.
    """
    if cpus:
        os.sched_setaffinity(0, cpus)
    import uvloop

    return uvloop.run(_sse_requests(url, n))


async def _sse_requests(url: str, n: int) -> dict[str, Any]:
    import aiohttp

    first_ms: list[float] = []
    total_ms: list[float] = []
    event_ms: list[float] = []
    problems: list[str] = []
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for i in range(n + 1):
            t0 = time.perf_counter()
            try:
                async with session.get(url) as resp:
                    if resp.status != 200:
                        problems.append(f"status {resp.status}")
                        await resp.read()
                        continue
                    first = await resp.content.readuntil(b"\n\n")
                    t1 = time.perf_counter()
                    later = await _later_events(resp.content)
                    t2 = time.perf_counter()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                problems.append(f"{type(exc).__name__}: {exc}")
                continue
            events = 1 + len(later)
            whole = first + b"".join(event for event, _ in later)
            if not first.startswith(b"data: ") or events != 5 or b"killgate.error" in whole:
                problems.append(f"bad stream ({events} events): {whole[:200]!r}")
            if i > 0:  # the first request only opens the connection
                first_ms.append((t1 - t0) * 1000)
                total_ms.append((t2 - t0) * 1000)
                event_ms.extend(ms for _, ms in later)
    return {"first_ms": first_ms, "total_ms": total_ms, "event_ms": event_ms,
            "problems": problems}


async def _later_events(content: Any) -> list[tuple[bytes, float]]:
    """Each event after the first, with ms from the backend writing it to its arrival here.

    The backend stamps every event with its CLOCK_MONOTONIC (`sent_ns`), which is one clock for
    every process on this machine, so the difference is the event's whole delivery time.
    """
    out: list[tuple[bytes, float]] = []
    while True:
        event = await content.readuntil(b"\n\n")
        if not event:
            return out
        arrived_ns = time.monotonic_ns()
        if not event.endswith(b"\n\n"):
            raise ValueError(f"stream ended inside an event: {event[:80]!r}")
        sent_ns = json.loads(event.removeprefix(b"data: "))["sent_ns"]
        out.append((event, (arrived_ns - sent_ns) / 1e6))


def measure_sse(url: str, n: int, cpus: frozenset[int] | None) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return dict(pool.apply(sse_client, (url, n, sorted(cpus) if cpus else None)))


# ======================================================================== a benchmark run


@dataclass
class Row:
    delay_ms: int
    connections: int
    side: str
    workers: int | None
    pinned: bool
    wrk: WrkResult
    cpu_us_per_req: float | None
    noise_pct: float
    attempts: int


@dataclass
class SseRow:
    side: str
    first_ms: list[float]
    total_ms: list[float]
    event_ms: list[float]
    problems: list[str]


@dataclass
class Settings:
    duration_s: float
    warmup_s: float
    connections: list[int]
    sse_requests: int
    wrk: str
    nginx: str | None
    script: Path
    tmp: Path
    raw_dir: Path
    max_noise_pct: float
    retries: int
    idle_s: float


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    sse: list[SseRow] = field(default_factory=list)
    idle: list[tuple[int, str, float]] = field(default_factory=list)  # (delay, side, % CPU)


def bench_side(settings: Settings, backend: Server, target: Server, pin: Pinning,
               delay_ms: int) -> list[Row]:
    """wrk at every connection count against `target` (warm-up, then a measured run)."""
    rows: list[Row] = []
    for conns in settings.connections:
        target.proc.check_alive()
        run_wrk(settings.wrk, settings.script, target.url, conns, settings.warmup_s, pin.client)
        best: Row | None = None
        for attempt in range(1, settings.retries + 2):
            row = measure(settings, backend, target, pin, delay_ms, conns, attempt)
            if best is None or row.noise_pct < best.noise_pct:
                best = row
            if row.noise_pct <= settings.max_noise_pct:
                break
            log(f"    noise {row.noise_pct:.0f}% > {settings.max_noise_pct:g}%: "
                + ("re-running" if attempt <= settings.retries else "keeping the quietest run"))
        assert best is not None
        best.attempts = attempt
        slug = f"{delay_ms}ms-c{conns}-{target.side.replace(' ', '-')}"
        (settings.raw_dir / f"wrk-{slug}.txt").write_text(best.wrk.raw)
        rows.append(best)
    return rows


def measure(settings: Settings, backend: Server, target: Server, pin: Pinning, delay_ms: int,
            conns: int, attempt: int) -> Row:
    """One measured wrk run, with the proxy's CPU time and the machine's noise around it."""
    measure_cpu = target.side != DIRECT
    proxy_pid = target.proc.pid if measure_cpu else None
    before = CpuSample.take(proxy_pid, backend.proc.pid)
    result = run_wrk(settings.wrk, settings.script, target.url, conns, settings.duration_s,
                     pin.client)
    after = CpuSample.take(proxy_pid, backend.proc.pid)
    target.proc.check_alive()
    backend.proc.check_alive()
    cpu = ((after.proxy - before.proxy) / result.requests * 1e6
           if measure_cpu and result.requests else None)
    noise = noise_percent(before, after)
    log(f"  {target.side:<11} delay={delay_ms}ms c={conns:<3} {result.rps:>10.0f} req/s "
        f"p50={result.p50_ms:.3f}ms p99={result.p99_ms:.3f}ms errors={result.errors_text()}"
        + (f" cpu={cpu:.1f}us/req" if cpu is not None else "") + f" noise={noise:.0f}%")
    return Row(delay_ms, conns, target.side, target.workers if measure_cpu else None,
               pin.pinned, result, cpu, noise, attempt)


def idle_cpu_percent(target: Server, seconds: float) -> float:
    """The proxy's own CPU use with no traffic (background tasks), in % of one CPU."""
    time.sleep(0.5)  # let startup work settle
    before, t0 = cpu_seconds(target.proc.pid), time.monotonic()
    time.sleep(seconds)
    used = cpu_seconds(target.proc.pid) - before
    pct = used / (time.monotonic() - t0) * 100
    log(f"  {target.side:<11} idle CPU {pct:.1f}% of one CPU")
    return pct


def sse_side(settings: Settings, target: Server, pin: Pinning) -> SseRow:
    res = measure_sse(f"http://{HOST}:{target.port}/sse", settings.sse_requests, pin.client)
    row = SseRow(target.side, res["first_ms"], res["total_ms"], res["event_ms"], res["problems"])
    if row.first_ms:
        log(f"  SSE {target.side:<11} first event p50={percentile(row.first_ms, 50):.2f}ms "
            f"p99={percentile(row.first_ms, 99):.2f}ms problems={len(row.problems)}")
    else:
        log(f"  SSE {target.side:<11} no successful stream: {row.problems[:3]}")
    return row


def run_all(settings: Settings, procs: Processes, logs_dir: Path) -> Results:
    res = Results()
    for delay_ms in DELAYS_MS:
        log(f"backend delay {delay_ms} ms")
        backend = start_backend(procs, delay_ms)
        try:
            for side, workers in plan(settings):
                pin = PIN_1W if workers == 1 else NO_PIN
                repin(backend.proc.pid, pin.client)
                target = start_side(settings, procs, backend, side, workers, pin)
                try:
                    if target is not backend:
                        res.idle.append((delay_ms, target.side,
                                         idle_cpu_percent(target, settings.idle_s)))
                    res.rows += bench_side(settings, backend, target, pin, delay_ms)
                    if delay_ms == 0 and workers == 1:
                        res.sse.append(sse_side(settings, target, pin))
                finally:
                    if target is not backend:
                        procs.stop(target.proc)
                        keep_logs(target, logs_dir, delay_ms)
        finally:
            procs.stop(backend.proc)
            keep_logs(backend, logs_dir, delay_ms)
    return res


def plan(settings: Settings) -> list[tuple[str, int]]:
    sides = [(DIRECT, 1), ("killgate", 1)]
    if settings.nginx:
        sides.append(("nginx", 1))
    sides.append(("killgate", 2))
    if settings.nginx:
        sides.append(("nginx", 2))
    return sides


def start_side(settings: Settings, procs: Processes, backend: Server, side: str, workers: int,
               pin: Pinning) -> Server:
    if side == DIRECT:
        return backend
    if side == "killgate":
        return start_killgate(procs, settings.tmp, backend.port, workers, pin.proxy)
    assert settings.nginx is not None
    return start_nginx(procs, settings.tmp, settings.nginx, backend.port, workers, pin.proxy)


def keep_logs(server: Server, logs_dir: Path, delay_ms: int) -> None:
    slug = server.side.replace(" ", "-")
    for path in server.logs:
        if path.exists():
            name = path.name if path.stem.startswith(slug) else f"{slug}-{path.name}"
            shutil.copyfile(path, logs_dir / f"{delay_ms}ms-{name}")


def log_excerpts(logs_dir: Path, lines: int = 8) -> list[str]:
    """The first lines of every non-empty log: warnings, errors, tracebacks."""
    out: list[str] = []
    for path in sorted(logs_dir.iterdir()):
        text = path.read_text(errors="replace").strip()
        if text:
            all_lines = text.splitlines()
            out.append(f"{path.name}: {len(all_lines)} line(s)")
            out += [f"    {line[:200]}" for line in all_lines[:lines]]
    return out


# ======================================================================== the report


def fmt(value: float | None, spec: str, signed: bool = False) -> str:
    if value is None:
        return "-"
    return format(value, ("+" if signed else "") + spec)


SIDE_ORDER = [DIRECT, "killgate 1w", "nginx 1w", "killgate 2w", "nginx 2w"]


def main_table(rows: list[Row]) -> list[list[str]]:
    by_key = {(r.delay_ms, r.connections, r.side): r for r in rows}
    rows = sorted(rows, key=lambda r: (r.delay_ms, r.connections, SIDE_ORDER.index(r.side)))
    table = [["scenario", "side", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "errors",
              "req/s vs direct", "req/s vs nginx", "p50 added µs", "p99 added ms", "noise %"]]
    for r in rows:
        direct = by_key.get((r.delay_ms, r.connections, DIRECT))
        nginx = by_key.get((r.delay_ms, r.connections, f"nginx {r.workers}w"))
        is_direct = r.side == DIRECT
        vs_direct = r.wrk.rps / direct.wrk.rps if direct and not is_direct else None
        vs_nginx = (r.wrk.rps / nginx.wrk.rps
                    if nginx and r.side.startswith("killgate") else None)
        p50_add = (r.wrk.p50_ms - direct.wrk.p50_ms) * 1000 if direct and not is_direct else None
        p99_add = r.wrk.p99_ms - direct.wrk.p99_ms if direct and not is_direct else None
        side = r.side + ("" if is_direct or r.pinned else " (unpinned)")
        table.append([f"{r.delay_ms} ms, c={r.connections}", side, f"{r.wrk.rps:,.0f}",
                      f"{r.wrk.p50_ms:.3f}", f"{r.wrk.p99_ms:.3f}", fmt(r.cpu_us_per_req, ".1f"),
                      r.wrk.errors_text(), fmt(vs_direct, ".2f"), fmt(vs_nginx, ".2f"),
                      fmt(p50_add, ".0f", signed=True), fmt(p99_add, ".3f", signed=True),
                      f"{r.noise_pct:.0f}" + (f" ({r.attempts} runs)" if r.attempts > 1 else "")])
    return table


def sse_table(rows: list[SseRow], n: int) -> list[list[str]]:
    table = [["side", "requests ok", f"first event p50 ms (n={n})", "first event p99 ms",
              "later events p50 ms", "later events p99 ms", "whole stream p50 ms", "problems"]]
    for r in rows:
        ok = bool(r.first_ms)
        later = bool(r.event_ms)
        table.append([r.side, str(len(r.first_ms)),
                      f"{percentile(r.first_ms, 50):.2f}" if ok else "-",
                      f"{percentile(r.first_ms, 99):.2f}" if ok else "-",
                      f"{percentile(r.event_ms, 50):.3f}" if later else "-",
                      f"{percentile(r.event_ms, 99):.3f}" if later else "-",
                      f"{percentile(r.total_ms, 50):.1f}" if ok else "-",
                      str(len(r.problems)) if not r.problems else
                      f"{len(r.problems)}: {r.problems[0][:80]}"])
    return table


def sse_added(rows: list[SseRow]) -> list[str]:
    """What each proxy adds to the direct figures, p50, and killgate's ratio to nginx's."""
    by_side = {r.side: r for r in rows if r.first_ms and r.event_ms}
    direct = by_side.get("direct")
    if direct is None:
        return []
    added: dict[str, tuple[float, float]] = {}
    for side, r in by_side.items():
        if side != "direct":
            added[side] = (percentile(r.first_ms, 50) - percentile(direct.first_ms, 50),
                           percentile(r.event_ms, 50) - percentile(direct.event_ms, 50))
    lines = ["", "Added to direct, p50: " + "; ".join(
        f"{side} first event {first * 1000:+.0f} µs, later events {event * 1000:+.0f} µs"
        for side, (first, event) in added.items()) + "."]
    kg, ng = by_side.get("killgate 1w"), by_side.get("nginx 1w")
    if kg and ng:
        first = percentile(kg.first_ms, 50) / percentile(ng.first_ms, 50)
        event = percentile(kg.event_ms, 50) / percentile(ng.event_ms, 50)
        lines.append(f"killgate 1w / nginx 1w, whole times p50: first event {first:.2f}x, "
                     f"later events {event:.2f}x.")
    return lines


def markdown(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(table[0]), sep, *(line(r) for r in table[1:])])


def command_output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def header(settings: Settings, argv: list[str]) -> str:
    commit = command_output(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    if command_output(["git", "status", "--porcelain", "--", "gateway"]):
        commit += " (gateway/ has uncommitted changes)"
    nginx_v = command_output([settings.nginx, "-v"]) if settings.nginx else "not installed"
    wrk_v = command_output([settings.wrk, "-v"]).splitlines()[0:1]
    pin_note = (f"1-worker runs: proxy pinned to CPU {PROXY_CPU}, wrk + backend (+ SSE client) "
                f"to CPU {CLIENT_CPU} (the direct runs use the same wrk + backend placement); "
                "2-worker runs: nothing pinned."
                if PIN_1W.pinned else "no pinning (taskset missing or fewer than 2 CPUs).")
    lines = [
        "# killgate data-plane benchmark",
        "",
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- git commit: {commit}",
        f"- CPU: {cpu_model()}; nproc: {len(ALL_CPUS)}; "
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- Python: {platform.python_version()} ({sys.executable}); kernel: {platform.release()}",
        f"- wrk: {wrk_v[0] if wrk_v else '?'}; nginx: {nginx_v}",
        f"- load: wrk POST of a {len(REQUEST_BODY)}-byte JSON body, {settings.duration_s:g} s per "
        f"run after a {settings.warmup_s:g} s warm-up; threads 1 (2 at >= 64 connections); "
        f"backend delays {', '.join(f'{d} ms' for d in DELAYS_MS)}",
        f"- pinning: {pin_note}",
        "- CPU µs/req: proxy utime+stime over its process tree (supervisor + workers, nginx "
        "master + workers) during the measured run / requests; the backend is not counted.",
        "- killgate gets a random KILLGATE_JWT_SECRET (admin auth; unused by the benchmark).",
        "- nginx: keepalive 64 to the backend, keepalive_requests 1000000, listen reuseport "
        "(killgate workers share the port with SO_REUSEPORT too).",
        f"- command: {' '.join(argv)}",
    ]
    if settings.nginx is None:
        lines.append("- nginx rows skipped: nginx is not on PATH (apt-get install -y nginx).")
    return "\n".join(lines)


def idle_table(idle: list[tuple[int, str, float]]) -> list[list[str]]:
    table = [["side", "idle CPU % of one CPU (one value per start)"]]
    for side in SIDE_ORDER:
        values = [f"{pct:.1f}" for _, s, pct in idle if s == side]
        if values:
            table.append([side, ", ".join(values)])
    return table


def report(settings: Settings, res: Results, argv: list[str], logs: list[str]) -> str:
    rows, sse_rows = res.rows, res.sse
    parts = [
        header(settings, argv),
        "",
        "## Throughput and latency (wrk)",
        "",
        markdown(main_table(rows)),
        "",
        "Ratios: `req/s vs direct` = side req/s / direct req/s; `req/s vs nginx` = killgate "
        "req/s / nginx req/s with the same worker count; `p50/p99 added` = side latency - "
        "direct latency at the same delay and connection count. `noise %` = CPU time the "
        "machine spent outside the benchmark's processes (proxy, backend, wrk, harness) plus "
        "hypervisor steal during the run, in % of one CPU: rows with a high value were "
        f"disturbed by other load; a run above {settings.max_noise_pct:g}% is re-run up to "
        f"{settings.retries} time(s) and the quietest run is kept (`(N runs)`).",
    ]
    if res.idle:
        parts += [
            "",
            f"## Proxy CPU with no traffic ({settings.idle_s:g} s after startup)",
            "",
            markdown(idle_table(res.idle)),
            "",
            "Background work (state sync, timers) is included in CPU µs/req; it matters at "
            "low request rates (e.g. 5 ms delay, c=1).",
        ]
    if sse_rows:
        parts += [
            "",
            f"## SSE: first event and later events ({settings.sse_requests} sequential GET /sse, "
            "5 events 100 ms apart, the first one sent with the headers)",
            "",
            markdown(sse_table(sse_rows, settings.sse_requests)),
            "",
            "`first event` = from sending the request to reading the first complete "
            "`data:` event (aiohttp client, one keep-alive connection); `later events` = "
            "from the backend writing each of events 2-5 to the client reading it whole (the "
            "backend stamps each with its CLOCK_MONOTONIC); `whole stream` should be ~400 ms "
            "if nothing buffers.",
            *sse_added(sse_rows),
        ]
    parts += ["", "## Logs of the processes under test (benchmarks/out/logs/)", ""]
    parts += ["```", *logs, "```"] if logs else ["All empty: no warnings or errors logged."]
    return "\n".join(parts) + "\n"


# ======================================================================== main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="killgate data-plane benchmark (wrk, nginx, direct)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--connections", default="1,16,64", help="comma-separated connection counts")
    p.add_argument("--sse-requests", type=int, default=50, help="sequential SSE requests per side")
    p.add_argument("--max-noise", type=float, default=25.0, metavar="PCT",
                   help="re-run a measurement when other load used more than PCT%% of one CPU")
    p.add_argument("--retries", type=int, default=2, help="re-runs allowed per noisy measurement")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: overrides to --duration 3, --connections 1,64, 20 SSE "
                        "requests")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.connections, args.sse_requests = 3.0, "1,64", 20
    args.connections = [int(c) for c in str(args.connections).split(",") if c.strip()]
    if not args.connections or min(args.connections) < 1 or args.duration <= 0:
        p.error("need positive connection counts and duration")
    return args


@contextmanager
def workspace(prefix: str) -> Iterator[tuple[Path, Path, Processes]]:
    """A temp folder (world-readable: nginx workers may run as another user), wrk's Lua
    script in it, and the processes started there: all stopped and removed on the way out,
    also on SIGINT/SIGTERM/SIGHUP (raised as KeyboardInterrupt)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmpname, terminate_as_interrupt():
        tmp = Path(tmpname)
        tmp.chmod(0o755)
        script = tmp / "post.lua"
        script.write_text(WRK_SCRIPT)
        procs = Processes(tmp)
        try:
            yield tmp, script, procs
        finally:
            procs.stop_all()


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP raise KeyboardInterrupt, so every `finally` stops what it started.

    SIGINT too: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    """
    def raise_interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = which("wrk")
    if wrk is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 1
    nginx = which("nginx")
    if nginx is None:
        print("note: nginx not on PATH, skipping the nginx rows (apt-get install -y nginx)",
              file=sys.stderr)
    if not PIN_1W.pinned:
        print("note: taskset missing or < 2 CPUs: nothing is pinned", file=sys.stderr)
    raw_dir, logs_dir = OUT_DIR / "raw", OUT_DIR / "logs"
    for d in (raw_dir, logs_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    cmdline = [Path(sys.executable).name, "benchmarks/harness.py",
               *(sys.argv[1:] if argv is None else argv)]
    try:
        with workspace("killgate-bench-") as (tmp, script, procs):
            settings = Settings(args.duration, min(2.0, max(1.0, args.duration / 5)),
                                args.connections, args.sse_requests, wrk, nginx, script, tmp,
                                raw_dir, args.max_noise, max(0, args.retries),
                                1.0 if args.quick else 2.0)
            results = run_all(settings, procs, logs_dir)
    except KeyboardInterrupt:
        log("interrupted: every process was stopped")
        return 130
    text = report(settings, results, cmdline, log_excerpts(logs_dir))
    (OUT_DIR / "latest.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
