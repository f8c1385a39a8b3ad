"""What a kill's commit script costs inside redis, alone and hot (RESULTS §52).

Run:  .venv/bin/python benchmarks/commit_script.py [--calls 3000] [--subscribers 3]

Starts its own redis-server and runs gateway/state/rediscommit.py's commit script `--calls`
times with a kill's arguments (a 1.5 KB signed document, a 0.9 KB audit event: each call
a successful commit continuing the last one's head and generation), `--subscribers`
connections subscribed to its channel, then variants of it: without the XADD, without the
`own()` type checks, an empty script given the same arguments (the EVALSHA's own cost), and
the same script with every command logged (SLOWLOG at 0 µs, as kill_stages.py runs it).
Prints redis's own `INFO commandstats` usec_per_call of EVALSHA for each. kill_stages.py
gives the script's time in a fleet (cold: a kill every 20 ms).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _procs import Procs, free_port  # noqa: E402

from gateway.state.rediscommit import _COMMIT  # noqa: E402

KEYS = ["p:state", "p:gen", "p:audit", "p:audit:head"]


def variants() -> dict[str, tuple[str, bool]]:
    """name → (script text, every command logged)."""
    text = _COMMIT.text
    out = {
        "the commit script": (text, False),
        "without the XADD": (text.replace(
            "redis.call('XADD', KEYS[3], '*', 'e', ARGV[4])", ""), False),
        "without own()": (text.replace(
            "own(KEYS[2], 'string'); own(KEYS[3], 'stream'); own(KEYS[4], 'string')", ""),
            False),
        "an empty script, the same arguments": ("return {'ok', ''}", False),
        "the commit script, SLOWLOG at 0 µs": (text, True),
    }
    for name, (t, _) in out.items():
        if t == text and name not in ("the commit script", "the commit script, SLOWLOG at 0 µs"):
            raise SystemExit(f"{name}: the script no longer has that line (rediscommit.py)")
    return out


def run(port: int, calls: int, subscribers: int) -> list[tuple[str, float]]:
    import redis

    r = redis.Redis(port=port)
    subs = [redis.Redis(port=port).pubsub() for _ in range(subscribers)]
    for ps in subs:
        ps.subscribe("p:events")
    doc, event = b"d" * 1500, b"e" * 900
    out = []
    for name, (text, logged) in variants().items():
        sha = r.script_load(text)
        r.flushdb()
        r.set("p:gen", "0")
        r.config_set("slowlog-log-slower-than", 0 if logged else 10_000)
        r.config_resetstat()
        head = "GENESIS"
        for i in range(calls):
            new = f"h{i}"
            got = r.evalsha(sha, 4, *KEYS, str(i), doc, str(i + 1), event, head, new,
                            "GENESIS", "p:events", "", "16777216", "", "")
            if got != [b"ok", b""]:
                raise SystemExit(f"{name}: call {i} answered {got!r}, not a commit")
            head = new
        r.config_set("slowlog-log-slower-than", 10_000)
        out.append((name, float(r.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])))
    for ps in subs:
        ps.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--subscribers", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        print("redis-server is missing: apt-get install -y redis-server", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="kg-script-"))
    procs = Procs()
    try:
        port = free_port()
        procs.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no"], tmp / "redis.log")
        time.sleep(0.3)
        rows = run(port, args.calls, args.subscribers)
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n# The commit script in redis, {args.calls} calls, {args.subscribers} subscribers "
          "(INFO commandstats)\n\n| variant | EVALSHA µs a call |\n|---|---|")
    for name, usec in rows:
        print(f"| {name} | {usec:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
