"""Fleet scale: how a kill reaches N instances sharing one Redis, and what the fleet costs
Redis at rest (issue 15 item 5).

For each N (default 1, 10, 50, 100): a fresh redis-server; one full `killgate serve` (the
instance the operator talks to: admin API, receipts) and N-1 lightweight instances
(benchmarks/fleet_member.py: the real Sync, RedisStore, poll loop, heartbeats and acks, no data
plane), spread over --hosts processes. All with the default intervals (poll 250 ms,
heartbeat 1 s). Then:
  at rest (--rest s):  Redis commands/s (INFO commandstats, commands run inside Lua scripts
                       included), bytes/s Redis sends, Redis CPU, instance CPU;
  --kills writes:      alternately kill and unkill one version through the admin API with
                       ?wait=5s; for each: the time until every one of the N instances had
                       swapped its table (from the moment the request was sent), and the
                       receipt's round trip (all N acked); Redis commands per write (net of
                       the at-rest rate);
  memory:              RSS of the full process; marginal RSS per lightweight instance.
Prints a Markdown table (also written to benchmarks/out/fleet.md).

    .venv/bin/python benchmarks/fleet.py [--sizes 1,10,50,100] [--kills 20] [--rest 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._procs import SECRET, Procs, free_port, pct, wait_http
from gateway.admin.tokens import mint
from gateway.config import StateConfig

HERE = Path(__file__).resolve().parent
STATE_KEY = secrets.token_hex(32)


def redis_cmd(port: int, *args: str) -> str:
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        data = b""
        while True:
            chunk = s.recv(1 << 20)
            data += chunk
            if not chunk or (data.startswith(b"$") and data.endswith(b"\r\n")
                             and len(data.split(b"\r\n", 1)[1]) >= int(data[1:data.index(b"\r")]) + 2) \
                    or (data[:1] in b"+-:" and data.endswith(b"\r\n")):
                break
    return data.decode(errors="replace")


def info(port: int, section: str) -> dict[str, str]:
    out = {}
    for line in redis_cmd(port, "INFO", section).split("\r\n"):
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


def command_calls(port: int) -> dict[str, int]:
    calls = {}
    for k, v in info(port, "commandstats").items():
        # the benchmark's own INFO / CONFIG / HLEN are not the fleet's
        if k.startswith("cmdstat_") and not k[8:].startswith(("info", "config")):
            calls[k[8:]] = int(v.split("calls=")[1].split(",")[0])
    return calls


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def write_config(work: Path, redis_port: int, port: int, admin: int) -> Path:
    key = "  signing_key_env: KILLGATE_STATE_KEY\n" if "signing_key_env" in \
        StateConfig.model_fields else ""
    cfg = work / "killgate.yaml"
    cfg.write_text(f"""listen: 127.0.0.1:{port}
admin: {{listen: 127.0.0.1:{admin}}}
state:
  backend: redis
  url: redis://127.0.0.1:{redis_port}/0
  prefix: kgfleet
  snapshot_path: {work}/writer-snap.json
{key}log: {{format: json, level: info}}
routes:
  - name: iris
    match: {{path_prefix: /v2/models/iris}}
    stable: v1
    versions:
      - {{name: v1, url: "http://127.0.0.1:9", weight: 90}}
      - {{name: v2, url: "http://127.0.0.1:9", weight: 10}}
""")
    return cfg


def post(url: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=15) as r:
        return dict(json.loads(r.read()))


def run_size(n: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    work = root / f"n{n}"
    work.mkdir()
    procs = Procs()
    env = {"KILLGATE_STATE_KEY": STATE_KEY}
    try:
        rport = free_port()
        procs.start([shutil.which("redis-server") or "redis-server", "--port", str(rport),
                             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(work)], work / "redis.log")
        deadline = time.monotonic() + 10
        while True:
            try:
                if "PONG" in redis_cmd(rport, "PING"):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        port, admin = free_port(), free_port()
        cfg = write_config(work, rport, port, admin)
        writer = procs.start([sys.executable, "-m", "gateway", "serve", "-c", str(cfg)],
                             work / "writer.log", env)
        wait_http(f"http://127.0.0.1:{admin}/readyz", 30)
        members = []
        rest = n - 1
        hosts = min(args.hosts, rest)
        for h in range(hosts):
            count = rest // hosts + (1 if h < rest % hosts else 0)
            out = work / f"applies-{h}.jsonl"
            p = subprocess.Popen(
                [sys.executable, str(HERE / "fleet_member.py"), str(cfg), "--count", str(count),
                 "--name", f"m{h}", "--workdir", str(work / f"m{h}"), "--out", str(out)],
                stdout=subprocess.PIPE, stderr=open(work / f"member-{h}.log", "wb"),  # noqa: SIM115
                env=dict(os.environ, **env), start_new_session=True)
            procs.procs.append(p)
            members.append((p, count, out))
        member_mem = []
        for p, count, _ in members:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                raise SystemExit(f"a fleet member exited: see {work}/member-*.log")
            ready = json.loads(line)
            if ready["connected"] != count:
                raise SystemExit(f"only {ready['connected']} of {count} members connected")
            member_mem.append((ready["rss_after_kib"] - ready["rss_before_kib"]) / count / 1024)
        # every instance heartbeating, and the writer has heard each one for 2 intervals
        deadline = time.monotonic() + 30
        while int(redis_cmd(rport, "HLEN", "kgfleet:instances")[1:].strip()) < n:
            if time.monotonic() > deadline:
                raise SystemExit("not every instance registered")
            time.sleep(0.1)
        time.sleep(3.0)

        # ---------------------------------------------------------------- at rest
        pids = [writer.pid] + [p.pid for p, _, _ in members]
        redis_cmd(rport, "CONFIG", "RESETSTAT")
        c0 = {pid: cpu_seconds(pid) for pid in pids}
        r0 = info(rport, "cpu")
        b0 = int(info(rport, "stats")["total_net_output_bytes"])
        t0 = time.monotonic()
        time.sleep(args.rest)
        dt = time.monotonic() - t0
        calls = command_calls(rport)
        r1 = info(rport, "cpu")
        b1 = int(info(rport, "stats")["total_net_output_bytes"])
        c1 = {pid: cpu_seconds(pid) for pid in pids}
        rest_rate = sum(calls.values()) / dt
        redis_cpu = (float(r1["used_cpu_sys"]) + float(r1["used_cpu_user"])
                     - float(r0["used_cpu_sys"]) - float(r0["used_cpu_user"])) / dt
        member_cpu = (sum(c1[p.pid] - c0[p.pid] for p, _, _ in members) / dt / max(1, n - 1)
                      if members else 0.0)
        writer_cpu = (c1[writer.pid] - c0[writer.pid]) / dt
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]

        # ---------------------------------------------------------------- writes
        token = mint(SECRET, "bench", "killgate:kill killgate:read", 3600, "killgate",
                     "killgate-admin")
        redis_cmd(rport, "CONFIG", "RESETSTAT")
        t_writes = time.monotonic()
        sent: dict[int, float] = {}
        receipts: list[float] = []
        acked_short = 0
        for k in range(args.kills):
            path = "/v1/kill" if k % 2 == 0 else "/v1/unkill"
            t_send = time.time()
            m0 = time.monotonic()
            res = post(f"http://127.0.0.1:{admin}{path}?wait=5s",
                       {"scope": "version", "route": "iris", "version": "v2",
                        "reason": "fleet benchmark"}, token)
            receipts.append((time.monotonic() - m0) * 1000)
            sent[int(res["generation"])] = t_send
            if res["applied"]["acked"] < n or res["applied"]["instances"] < n:
                acked_short += 1
            time.sleep(args.gap)
        writes_dt = time.monotonic() - t_writes
        write_calls = sum(command_calls(rport).values())
        per_write = (write_calls - rest_rate * writes_dt) / args.kills
        writer_rss = rss_mib(writer.pid)
        redis_mem = int(info(rport, "memory")["used_memory"]) / 1024 / 1024
    finally:
        procs.stop()

    # ---------------------------------------------------------------- who applied when
    applied: dict[int, dict[str, float]] = {g: {} for g in sent}
    for line in (work / "writer.log").read_text(errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "state_applied" and ev.get("generation") in applied:
            applied[ev["generation"]].setdefault("writer", ev["applied_at"])
    for _, _, out in members:
        for line in out.read_text().splitlines():
            rec = json.loads(line)
            if rec["gen"] in applied:
                applied[rec["gen"]].setdefault(rec["i"], rec["t"])
    to_all, each, missing = [], [], 0
    for g, t_send in sent.items():
        times = [(t - t_send) * 1000 for t in applied[g].values()]
        missing += n - len(times)
        each += times
        if len(times) == n:
            to_all.append(max(times))
    return {
        "n": n, "to_all_p50": pct(to_all, 0.5) if to_all else float("nan"),
        "to_all_p99": pct(to_all, 0.99) if to_all else float("nan"),
        "each_p50": pct(each, 0.5), "receipt_p50": pct(receipts, 0.5),
        "receipt_p99": pct(receipts, 0.99), "short": acked_short, "missing": missing,
        "per_write": per_write, "rest_rate": rest_rate, "rest_out_kib": (b1 - b0) / dt / 1024,
        "redis_cpu": redis_cpu * 100, "member_cpu": member_cpu * 100,
        "writer_cpu": writer_cpu * 100, "writer_rss": writer_rss,
        "member_mem": sum(member_mem) / len(member_mem) if member_mem else float("nan"),
        "redis_mem": redis_mem, "top": top,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,10,50,100")
    ap.add_argument("--kills", type=int, default=20, help="writes per size (kill, unkill, ...)")
    ap.add_argument("--rest", type=float, default=5.0, help="seconds measured at rest")
    ap.add_argument("--gap", type=float, default=0.2, help="seconds between writes")
    ap.add_argument("--hosts", type=int, default=2, help="processes for the lightweight ones")
    args = ap.parse_args()
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is needed (apt-get install -y redis-server)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="kg-fleet-") as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            print(f"N={n} ...", file=sys.stderr, flush=True)
            rows.append(run_size(n, args, Path(tmp)))
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                   text=True).stdout.split()[2]
    head = (f"fleet benchmark: {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}"
            f", {os.cpu_count()} CPUs, Python {platform.python_version()}, redis {redis_version}"
            f", {args.kills} writes per size, {args.rest:g} s at rest, lightweight instances in "
            f"{args.hosts} processes")
    lines = [head, "",
             "| N | kill → all N p50 | p99 | → one instance p50 | receipt p50 | p99 "
             "| receipts short | Redis cmds / write | Redis cmds/s at rest | Redis out KiB/s at rest "
             "| Redis CPU % at rest | CPU % per instance at rest | RSS full process MiB "
             "| RSS per lightweight instance MiB |",
             "|" + "---|" * 14]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['to_all_p50']:.1f} ms | {r['to_all_p99']:.1f} ms | "
            f"{r['each_p50']:.1f} ms | {r['receipt_p50']:.1f} ms | {r['receipt_p99']:.1f} ms | "
            f"{r['short']} | {r['per_write']:.0f} | {r['rest_rate']:.0f} | "
            f"{r['rest_out_kib']:.1f} | {r['redis_cpu']:.1f} | {r['member_cpu']:.2f} | "
            f"{r['writer_rss']:.0f} | {r['member_mem']:.2f} |")
    lines.append("")
    base = rows[0]
    for r in rows[1:]:
        lines.append(
            f"N={r['n']} vs N={base['n']}: instances x{r['n'] / base['n']:g}; Redis cmds/s at rest "
            f"x{r['rest_rate'] / base['rest_rate']:.1f}, Redis bytes out at rest "
            f"x{r['rest_out_kib'] / max(base['rest_out_kib'], 1e-9):.1f}, cmds per write "
            f"x{r['per_write'] / max(base['per_write'], 1e-9):.1f}, receipt p50 "
            f"x{r['receipt_p50'] / base['receipt_p50']:.1f}")
    for r in rows:
        lines.append(f"N={r['n']} busiest commands at rest: "
                     + ", ".join(f"{k} {v / args.rest:.0f}/s" for k, v in r["top"])
                     + (f"; {r['missing']} applies not seen" if r["missing"] else ""))
    text = "\n".join(lines)
    print(text)
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "fleet.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
