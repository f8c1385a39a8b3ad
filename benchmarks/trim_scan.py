"""How long one audit trim's read holds redis (every other client, kills included, waits
that long): the trail is filled with N sealed events on a private redis-server, then the
read script (_READ) and every scan step (_SCAN, gateway/state/trailscan.py) are run, each
timed by redis itself (SLOWLOG, microseconds).

    .venv/bin/python benchmarks/trim_scan.py 100000 1000000

Needs redis-server and redis-cli on PATH. On the 2-core machine of issue 13 (482-byte
events): the single script the scan used to be held redis ~0.8 s for 100k events and
~9.7 s for 1M; now the read takes ~6-10 ms and a step ~1.5 ms (the longest of 201 for
100k: 17-26 ms; all steps of 100k: ~310 ms, spread over as many scripts).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.domain.audit import GENESIS, AuditDraft, seal
from gateway.state import redistrim, trailscan


def _resp(*args: str | bytes) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _took(cli: list[str], *cmd: str) -> tuple[str, int]:
    """Run `cmd`, and what redis's SLOWLOG says it took (us)."""
    subprocess.run([*cli, "SLOWLOG", "RESET"], capture_output=True, check=True)
    out = subprocess.run([*cli, *cmd], capture_output=True, check=True).stdout.decode()
    log = subprocess.run([*cli, "SLOWLOG", "GET", "1"], capture_output=True,
                         check=True).stdout.split()
    return out, int(log[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("events", nargs="*", type=int, default=[100000],
                    help="trail lengths to fill and time, in turn (default 100000)")
    args = ap.parse_args()
    if args.events != sorted(set(args.events)) or args.events[0] < 1:
        # (the trail is filled up to each length in turn, never cut: a shorter one after a
        # longer would be timed on the longer trail and printed as the shorter)
        ap.error("trail lengths must be at least 1 and in increasing order, e.g. 1000 100000")
    port = 27000 + os.getpid() % 2000
    srv = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly",
                            "no", "--dir", tempfile.mkdtemp(), "--slowlog-log-slower-than", "0"],
                           stdout=subprocess.DEVNULL)
    cli = ["redis-cli", "-p", str(port)]
    try:
        for _ in range(100):
            if subprocess.run([*cli, "PING"], capture_output=True).stdout.strip() == b"PONG":
                break
            time.sleep(0.05)
        body = json.dumps(seal(AuditDraft(actor="alice", action="kill", target={"route": "r"},
                                          reason="r").as_event(), GENESIS, ("k", b"k" * 32)))
        subprocess.run([*cli, "SCRIPT", "LOAD", trailscan._SCAN.text], capture_output=True,
                       check=True)
        have = 0
        for n in args.events:
            fill = subprocess.Popen([*cli, "--pipe"], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL)
            assert fill.stdin is not None
            fill.stdin.write(_resp("XADD", "audit", "*", "e", body) * (n - have))
            fill.stdin.close()
            fill.wait()
            have = n
            _, read = _took(cli, "EVAL", redistrim._READ.text, "3", "state", "gen", "audit",
                            "65536", str(redistrim.TRIM_BATCH + 1), "", "")
            at, steps, longest, total = "+", 0, 0, 0
            while at:
                out, us = _took(cli, "EVALSHA", trailscan._SCAN.sha, "1", "audit", at,
                                str(trailscan.SCAN_STEP), "-")
                at = out.split("\n")[0].strip()
                steps, longest, total = steps + 1, max(longest, us), total + us
            print(f"{n} events of {len(body)} B: read {read / 1000:.1f} ms; scan {steps} "
                  f"steps, longest {longest / 1000:.1f} ms, all {total / 1000:.0f} ms")
    finally:
        srv.terminate()
        srv.wait()


if __name__ == "__main__":
    main()
