"""Where `serve --workers N`'s CPU goes: each process of the group, and the same code placed
on the CPUs in different ways, under wrk (c=64, 0 ms backend) — all in one run, alternated.

    .venv/bin/python benchmarks/worker_split.py [--rounds 3 --duration 6]
        [--placements 1w,1w-free,1w-share,2w,2w-cpu0,2w-split] [--killgate PATH]

Placements (the backend always on CPU 1, as in ab.py):

* `1w`       — one worker on CPU 0, wrk on CPU 1 (ab.py's and harness.py's 1-worker side);
* `1w-free`  — one worker, nothing pinned (ab.py's placement of N workers, with one);
* `1w-share` — one worker and wrk both on CPU 0 (the gateway shares its core with wrk);
* `2w`       — `serve --workers 2`, nothing pinned (ab.py's 2-worker side);
* `2w-cpu0`  — `serve --workers 2`, both workers moved to CPU 0, wrk on CPU 1 (the CPU the
  gateway gets is `1w`'s, in two processes);
* `2w-split` — `serve --workers 2`, worker i moved to CPU i, wrk unpinned.

Per round and placement: a fresh gateway, a 2 s warm-up, then `--duration` s of wrk. For
each process of the gateway (the supervisor, each worker): CPU µs per request (utime+stime
from /proc, the requests being wrk's), and, from `perf stat` software counters and
tracepoints where the kernel allows them: context switches, event-loop iterations
(`epoll_pwait` calls), all system calls, and write calls per request (each proxied request
writes twice, to the backend and to the client, so writes / 2 is the worker's share of the
requests). The connections each worker holds (SO_REUSEPORT spreads them by hash) come from
`ss`. Prints each run and a table of medians. Needs wrk; perf is optional.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from _procs import Procs, bench_config, free_port, pinned, start_backend, wait_http
from ab import wrk
from harness import CLK_TCK, WRK_SCRIPT, process_tree

ROOT = Path(__file__).resolve().parent.parent
PLACEMENTS = ("1w", "1w-free", "1w-share", "2w", "2w-cpu0", "2w-split")
EVENTS = ("context-switches", "syscalls:sys_enter_epoll_pwait", "raw_syscalls:sys_enter",
          "syscalls:sys_enter_write")
SHORT = {"context-switches": "csw", "syscalls:sys_enter_epoll_pwait": "loops",
         "raw_syscalls:sys_enter": "syscalls", "syscalls:sys_enter_write": "writes"}


@dataclass
class Run:
    placement: str
    requests: int = 0
    rps: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds
    counts: dict[str, dict[str, float]] = field(default_factory=dict)  # process -> event -> n
    conns: dict[str, int] = field(default_factory=dict)  # worker -> connections

    def per_req(self, seconds: float) -> float:
        return seconds / self.requests * 1e6

    def total_us(self) -> float:
        return self.per_req(sum(self.cpu.values()))

    def event(self, name: str) -> float:
        """`name` per request, summed over the workers."""
        return sum(c.get(name, 0.0) for c in self.counts.values()) / self.requests


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def perf_works() -> bool:
    if shutil.which("perf") is None:
        return False
    r = subprocess.run(["perf", "stat", "-x,", "-e", ",".join(EVENTS), "true"],
                       capture_output=True, text=True)
    return r.returncode == 0 and "not supported" not in r.stderr and "<not" not in r.stderr


def connections(port: int) -> dict[int, int]:
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"sport = :{port}"],
                         capture_output=True, text=True).stdout
    per: dict[int, int] = {}
    for m in re.finditer(r"pid=(\d+)", out):
        per[int(m.group(1))] = per.get(int(m.group(1)), 0) + 1
    return per


def start(placement: str, exe: str, procs: Procs, work: Path, backend: int
          ) -> tuple[dict[str, int], int, int | None]:
    """The gateway of `placement`: {process name: pid}, its data port, wrk's CPU."""
    port, admin = free_port(), free_port()
    cfg = bench_config(work, port, admin, backend)
    workers = 2 if placement.startswith("2w") else 1
    argv = [exe, "serve", "-c", str(cfg), "--workers", str(workers)]
    if placement in ("1w", "1w-share"):
        argv = pinned(0, argv)
    top = procs.start(argv, work / "gateway.log").pid
    wait_http(f"http://127.0.0.1:{admin}/readyz")
    if workers == 1:
        return {"worker": top}, port, {"1w": 1, "1w-share": 0}.get(placement)
    deadline = time.monotonic() + 15
    pids: dict[str, int] = {}
    while len(pids) < workers and time.monotonic() < deadline:
        for pid in process_tree(top)[1:]:
            m = re.search(rb"--worker-index\0(\d+)", Path(f"/proc/{pid}/cmdline").read_bytes())
            if m:
                pids[f"w{int(m.group(1))}"] = pid
        time.sleep(0.05)
    for name, pid in pids.items():
        cpu = {"2w-cpu0": "0", "2w-split": name[1:]}.get(placement)
        if cpu is not None:
            subprocess.run(["taskset", "-p", "-c", cpu, str(pid)], check=True,
                           capture_output=True)
    return {"supervisor": top, **pids}, port, 1 if placement == "2w-cpu0" else None


def one(placement: str, args: argparse.Namespace, work: Path, backend: int,
        script: Path, use_perf: bool) -> Run:
    procs = Procs()
    run = Run(placement)
    try:
        pids, port, wrk_cpu = start(placement, args.killgate, procs, work, backend)
        url = f"http://127.0.0.1:{port}/v2/models/m/infer"
        wrk(64, 2, url, script, wrk_cpu)  # warm-up
        perfs: dict[str, subprocess.Popen[bytes]] = {}
        if use_perf:
            for name, pid in pids.items():
                perfs[name] = subprocess.Popen(
                    ["perf", "stat", "-x,", "-e", ",".join(EVENTS), "-p", str(pid),
                     "-o", str(work / f"perf.{name}")], stderr=subprocess.DEVNULL)
            time.sleep(0.3)  # (perf attaches)
        before = {name: cpu_of(pid) for name, pid in pids.items()}
        got: dict[str, str] = {}
        t = threading.Thread(target=lambda: got.setdefault(
            "out", wrk(64, args.duration, url, script, wrk_cpu)))
        t.start()
        time.sleep(args.duration / 2)
        held = connections(port)
        t.join()
        run.cpu = {name: cpu_of(pid) - before[name] for name, pid in pids.items()}
        for name, p in perfs.items():
            p.send_signal(2)
            p.wait()
            run.counts[name] = {}
            for line in (work / f"perf.{name}").read_text().splitlines():
                f = line.split(",")
                if len(f) > 3 and f[2] in EVENTS and f[0].replace(".", "").isdigit():
                    run.counts[name][f[2]] = float(f[0])
        run.conns = {name: held.get(pid, 0) for name, pid in pids.items()
                     if name != "supervisor"}
    finally:
        procs.stop()
    out = got["out"]
    run.requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    run.rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx.*|Socket errors.*", out)
    if bad:
        print(f"  warning: {bad.group(0)}", file=sys.stderr)
    return run


def describe(run: Run) -> str:
    parts = [f"{run.placement:>8}: {run.rps:8,.0f} req/s {run.total_us():5.1f} µs/req ="]
    for name, sec in run.cpu.items():
        share = ""
        writes = run.counts.get(name, {}).get("syscalls:sys_enter_write")
        if writes and name != "supervisor":
            share = f" {writes / 2 / run.requests:.0%} of req"
        conns = f" {run.conns[name]} conns" if name in run.conns else ""
        parts.append(f"{name} {run.per_req(sec):.1f}{conns}{share};")
    if run.counts:
        parts.append(" ".join(f"{SHORT[e]} {run.event(e):.3f}" for e in EVENTS) + " /req")
    return " ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--placements", default=",".join(PLACEMENTS))
    ap.add_argument("--killgate", default=str(ROOT / ".venv" / "bin" / "killgate"))
    args = ap.parse_args()
    placements = [p for p in args.placements.split(",") if p]
    unknown = set(placements) - set(PLACEMENTS)
    if unknown:
        ap.error(f"unknown placements {sorted(unknown)}; known: {', '.join(PLACEMENTS)}")
    for tool in ("wrk", "taskset", "ss"):
        if shutil.which(tool) is None:
            print(f"benchmarks/worker_split.py needs {tool}", file=sys.stderr)
            return 1
    use_perf = perf_works()
    if not use_perf:
        print("perf software counters unavailable: CPU split only", file=sys.stderr)
    runs: dict[str, list[Run]] = {p: [] for p in placements}
    with tempfile.TemporaryDirectory(prefix="killgate-split-") as tmp:
        root = Path(tmp)
        script = root / "post.lua"
        script.write_text(WRK_SCRIPT)
        procs = Procs()
        try:
            backend = start_backend(procs, root / "backend.log", 0.0)
            for r in range(args.rounds):
                for p in placements:
                    work = root / f"{p}.{r}"
                    work.mkdir()
                    run = one(p, args, work, backend, script, use_perf)
                    runs[p].append(run)
                    print(f"round {r + 1} {describe(run)}", file=sys.stderr, flush=True)
        finally:
            procs.stop()
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}: {args.rounds} alternate rounds, c=64, "
          f"{args.duration:g} s each, 0 ms backend on CPU 1; medians\n")
    print("| placement | req/s | CPU µs/req | vs first | supervisor µs/req | ctx switches/req "
          "| loop iterations/req | syscalls/req | connections per worker |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = statistics.median(r.total_us() for r in runs[placements[0]])
    for p in placements:
        rs = runs[p]
        us = statistics.median(r.total_us() for r in rs)
        sup = statistics.median(r.per_req(r.cpu.get("supervisor", 0.0)) for r in rs)
        ev = [statistics.median(r.event(e) for r in rs) if use_perf else float("nan")
              for e in EVENTS[:3]]
        conns = " / ".join("-".join(str(v) for v in r.conns.values()) for r in rs)
        print(f"| {p} | {statistics.median(r.rps for r in rs):,.0f} | {us:.1f} | "
              f"{us / base:.2f} | {sup:.2f} | {ev[0]:.3f} | {ev[1]:.3f} | {ev[2]:.2f} | "
              f"{conns} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
