"""Where a kill's time goes, stage by stage: `killswitch.py --propagation-only` with stamps.

Run:  .venv/bin/python benchmarks/kill_stages.py [--kills 200] [--keep DIR]

Runs benchmarks/killswitch.py --propagation-only --raw with benchmarks/killstages/ first
on PYTHONPATH: its sitecustomize.py wraps a few functions of the kill path in every
`killgate serve` (never in the floor's processes nor the client) and stamps the wall clock
at each stage. Prints killswitch.py's own table (the propagation figures and the floor of
the same run), then, for the kills sent 20 ms apart (unkills re-read the store by design),
the median time of each stage after the call left the client and the median time each
stage took, on the committing instance and on the two others (pooled). The stamps cost
~1 µs each, a few per stage: the figures are those of the table, within ~20 µs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COMMITTER = ["admin.handler_entered", "admin.authorized", "admin.body_read",
             "admin.intent_built", "write.entered", "commit.entered", "commit.sealed",
             "commit.script_send", "commit.script_sent", "commit.reply_read", "apply.entered",
             "swap.rebuild_begin", "swap.rebuilt", "swap.listeners_done", "swap.warned",
             "apply.done"]
RECEIVER = ["push.read", "push.on_message", "push.verified", "push.decoded", "push.pushed",
            "apply.entered", "swap.rebuild_begin", "swap.rebuilt", "swap.listeners_done",
            "swap.warned", "apply.done"]


def stage_rows(stamps: list[dict[str, float]], order: list[str]) -> list[tuple[str, float, float, int]]:
    """(stage, median ms after the send, median ms since the previous stage, n)."""
    rows = []
    prev: str | None = None
    for name in order:
        at = [s[name] for s in stamps if name in s]
        took = [s[name] - s[prev] for s in stamps if name in s and prev in s] if prev else []
        if at:
            rows.append((name, statistics.median(at), statistics.median(took) if took else 0.0,
                         len(at)))
            prev = name
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--keep", type=Path, default=None, help="keep the stamps and raw figures here")
    args = ap.parse_args()
    out = args.keep or Path(tempfile.mkdtemp(prefix="kg-stages-"))
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "raw.json"
    env = dict(os.environ, KG_STAGES_OUT=str(out),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "benchmarks/killstages"),
                                                       os.environ.get("PYTHONPATH")])))
    subprocess.run([sys.executable, str(ROOT / "benchmarks/killswitch.py"), "--propagation-only",
                    "--kills", str(args.kills), "--raw", str(raw)], env=env, check=True)
    series = json.loads(raw.read_text())["series"]
    sent = dict(zip((int(g) for g in series["gens"]), series["sent"], strict=True))
    kills = {int(g) for g in series["kills"]}
    per_pid = [json.loads(p.read_text()) for p in sorted(out.glob("stages-*.json"))]
    committer: list[dict[str, float]] = []
    receivers: list[dict[str, float]] = []
    last: list[float] = []
    for gen in sorted(kills):
        t0 = sent[gen]
        done = []
        for stamps in per_pid:
            got = stamps.get(str(gen))
            if not got:
                continue
            first: dict[str, float] = {}
            for name, ns in got:
                first.setdefault(name, (ns / 1e9 - t0) * 1000)
            (committer if "admin.handler_entered" in first else receivers).append(first)
            done.append(first.get("apply.done", 0.0))
        if len(done) == 3:
            last.append(max(done))
    print(f"\n# Stages of {len(last)} kills, 20 ms apart (ms after the call left the client; "
          "medians)\n")
    for title, stamps, order in (("the committing instance", committer, COMMITTER),
                                 ("the other two (pooled)", receivers, RECEIVER)):
        print(f"## {title}, n={len(stamps)}\n\n| stage | at | took |\n|---|---|---|")
        for name, at, took, _n in stage_rows(stamps, order):
            print(f"| {name} | {at:.3f} | {took:.3f} |")
        print()
    if last:
        print(f"the last of the three applied: {statistics.median(last):.3f} ms p50")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
