"""A whole kill's instructions in real `killgate serve` processes, under callgrind.

Run:  .venv/bin/python benchmarks/kill_serve_instructions.py [--kills 30] [--warmup 6]
                                                           [--keep DIR] [--tree DIR]

Starts a redis-server, a backend and three `killgate serve` instances on it (killswitch.py's
config: route `bench`, v1/v2): A (the committer) and B (a receiver) under `valgrind
--tool=callgrind --instr-atstart=no --collect-atstart=no` with benchmarks/killcount/ first
on PYTHONPATH, C natively (so every answer waits for three acks, as the benchmark's). Then
`--warmup` + `--kills` kill/unkill pairs of `version:bench:v2` through A's admin API over
one keep-alive connection (killswitch.py's request, with its JWT), one at a time. The
sitecustomize there cuts callgrind windows (see its docstring) and dumps each; this script
sums them per kind over the calls after the warm-up and prints instructions per call:

* committer, HTTP read → EVALSHA sent (`pre`), EVALSHA → answer written (`post`);
* receiver, the pushed document's read → in force (`push`, B).

`--tree DIR` runs the instances from another source tree (an export of main, say: the
before of a change). `--keep DIR` keeps the callgrind files (`callgrind_annotate`).
Needs valgrind and gcc. PYTHONHASHSEED=0 for every instance.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from _procs import SECRET, Procs, free_port, start_backend, wait_http  # noqa: E402
from killswitch import gateway_config  # noqa: E402

from gateway.admin.tokens import mint  # noqa: E402

HELPER = r"""
#include <valgrind/callgrind.h>
void kg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void kg_zero(void) { CALLGRIND_ZERO_STATS; }
void kg_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }
void kg_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
"""


def call(sock: socket.socket, tok: str, path: str, i: int) -> dict:
    body = json.dumps({"scope": "version", "route": "bench", "version": "v2",
                       "reason": f"bench {i}"}).encode()
    req = (f"POST {path}?wait=30s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           f"Authorization: Bearer {tok}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    sock.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        rest += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head + rest
    return json.loads(rest)


def dumps(prefix: Path) -> list[tuple[int, str, int]]:
    """(dump number, trigger name, instructions) of one process's callgrind dumps."""
    out = []
    for f in prefix.parent.glob(prefix.name + ".*"):
        n = f.name.rsplit(".", 1)[1]
        if not n.isdigit():
            continue
        text = f.read_text(errors="replace")
        trigger = re.search(r"^desc: Trigger: Client Request: (\S+)", text, re.M)
        total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if trigger and total:
            out.append((int(n), trigger.group(1), int(total.group(1))))
    return sorted(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=6)
    ap.add_argument("--keep", type=Path, default=None)
    ap.add_argument("--tree", type=Path, default=ROOT)
    ap.add_argument("--profile", action="store_true",
                    help="no valgrind: cProfile over the same windows, A and B natively; "
                         "the stats in DIR/prof-pre.<pid>, prof-post.<pid> (pstats)")
    ap.add_argument("--opcodes", action="store_true",
                    help="no valgrind: bytecodes per function over the same windows, A and "
                         "B natively; in DIR/ops.<pid> (JSON)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="kg-killserve-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "h.c").write_text(HELPER)
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(work / "h.so"),
                    str(work / "h.c")], check=True)
    procs = Procs()
    try:
        rport = free_port()
        procs.start(["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no"],
                    work / "redis.log")
        bport = start_backend(procs, work / "backend.log", 0)
        tree = args.tree.resolve()
        env = {"PYTHONHASHSEED": "0",
               "PYTHONPATH": f"{ROOT / 'benchmarks/killcount'}{os.pathsep}{tree}",
               "KG_COUNT_LIB": str(work / "h.so")}
        if args.profile:
            env = dict(env, KG_COUNT_LIB="", KG_COUNT_PROFILE=str(work / "prof"))
        if args.opcodes:
            env = dict(env, KG_COUNT_LIB="", KG_COUNT_OPCODES=str(work / "ops"))
        native = args.profile or args.opcodes
        admins = []
        # (`-m gateway` puts the working directory first on the path, and the
        # sitecustomize imports gateway from there: the instances must start in the tree)
        os.chdir(tree)
        for name in ("a", "b", "c"):
            cfg, _, admin = gateway_config(work, name, bport, f"redis://127.0.0.1:{rport}")
            cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(cfg)]
            if name != "c" and not native:
                cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                       "--collect-atstart=no", f"--callgrind-out-file={work}/cg-{name}",
                       *cmd]
            procs.start(cmd, work / f"{name}.log", env=env)
            admins.append(admin)
        for admin in admins:
            wait_http(f"http://127.0.0.1:{admin}/readyz", timeout=600)
        tok = mint(SECRET, "bench", "killgate:admin", 3600, "killgate", "killgate-admin")
        gens: dict[str, list[int]] = {"kill": [], "unkill": []}
        with socket.create_connection(("127.0.0.1", admins[0])) as sock:
            for i in range(args.warmup + args.kills):
                for kind in ("kill", "unkill"):
                    ans = call(sock, tok, f"/v1/{kind}", i)
                    if i >= args.warmup:
                        gens[kind].append(int(ans["generation"]))
                    time.sleep(0.05 if native else 0.3)  # (B: the unkill's re-read)
        time.sleep(2)
    finally:
        procs.stop()
    if native:
        print(f"written: {sorted(work.glob('prof*')) + sorted(work.glob('ops*'))}")
        return 0
    a, b = dumps(work / "cg-a"), dumps(work / "cg-b")
    # the committer's dumps come in call order: a c_pre then a c_post per call
    names = [d[1] for d in a]
    calls = []
    for i, d in enumerate(a):
        if d[1] == "c_post" and i > 0 and names[i - 1] == "c_pre":
            calls.append((a[i - 1][2], d[2]))
    skip = 2 * args.warmup
    kills, unkills = calls[skip::2], calls[skip + 1::2]
    if len(calls) != 2 * (args.warmup + args.kills):
        print(f"(the committer's windows: {len(calls)} calls paired of "
              f"{2 * (args.warmup + args.kills)})")
    applied = {int(d[1][8:]): d[2] for d in b if d[1].startswith("r_apply_")}
    hinted = {int(d[1][7:]): d[2] for d in b if d[1].startswith("r_hint_")}
    recv_kill = [applied[g] for g in gens["kill"] if g in applied]
    # (an unkill's hint arrives while B holds the kill's generation, one below the unkill's)
    recv_unkill = [hinted[g - 1] for g in gens["unkill"] if g - 1 in hinted]
    print(f"{args.kills} kill/unkill pairs after {args.warmup} warm-up ones, tree {tree}\n")
    print("| window | kill: median (min) | unkill: median (min) |\n|---|---|---|")

    def med(xs: list[int]) -> str:
        xs = sorted(xs)
        return f"{xs[len(xs) // 2]:,} ({xs[0]:,})" if xs else "-"
    print(f"| committer: HTTP read → commit's EVALSHA | {med([k[0] for k in kills])} | "
          f"{med([k[0] for k in unkills])} |")
    print(f"| committer: EVALSHA → answer written | {med([k[1] for k in kills])} | "
          f"{med([k[1] for k in unkills])} |")
    print(f"| receiver (B): push read → in force / hint | {med(recv_kill)} | "
          f"{med(recv_unkill)} |")
    print(f"\n(instructions a call, median and minimum; files in {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
