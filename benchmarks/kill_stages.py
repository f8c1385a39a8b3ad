"""Where a kill's time goes, stage by stage: `killswitch.py --propagation-only` with stamps.

Run:  .venv/bin/python benchmarks/kill_stages.py [--kills 200] [--runs 3] [--keep DIR]
      .venv/bin/python benchmarks/kill_stages.py --from DIR [DIR ...]

Runs benchmarks/killswitch.py --propagation-only --raw --slowlog with benchmarks/killstages/
first on PYTHONPATH: its sitecustomize.py wraps the functions killstages/targets.py names
in every `killgate serve` (never in the floor's processes nor the client) and stamps
CLOCK_MONOTONIC (one clock for the whole host) at each stage of a kill. Prints
killswitch.py's own table (the propagation figures and the floor of the same run), then,
for the kills sent 20 ms apart (unkills re-read the store by design), each stage's time
after the call left the client and the time since the stage before (p50 and p90), on the
instance the call reached (the committer) and on the two others (pooled), and what redis
spent running the commit's script (SLOWLOG, every command logged during the series). The
stamps cost ~1 µs each: the figures are the table's, within ~20 µs. A hooked function that
no longer exists, or a stage no kill stamped, fails the run (exit 1, named).
`--runs N`: N runs (a shared machine's differ), then each stage's median over them.
`--from DIR ...`: print the breakdown of runs kept with `--keep DIR`, without running.
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
sys.path.insert(0, str(ROOT / "benchmarks/killstages"))

sys.path.insert(0, str(ROOT))

from targets import missing  # noqa: E402

from gateway.state.rediscommit import _COMMIT  # noqa: E402

COMMITTER = ["admin.read", "admin.request_task", "handler.entered", "handler.authorized", "handler.body_read",
             "write.entered", "commit.entered", "commit.sealed", "commit.evalsha_send",
             "commit.evalsha_written", "commit.reply_rx", "commit.reply_parsed", "applied"]
RECEIVER = ["push.rx", "push.verify_begin", "push.verified", "push.decoded", "applied"]
#: the committer after its swap, until its answer waits for the fleet's acks: CPU it spends
#: while the receivers may still wait for a vCPU (not required: a stage may not occur)
AFTER = ["applied", "after.reply_done", "after.script_returned", "after.commit_returned",
         "after.receipt_wait"]
Stamps = dict[str, float]


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


Kill = tuple[float, Stamps, list[Stamps]]


def by_kill(out: Path) -> tuple[list[Stamps], list[Stamps], list[Kill]]:
    """Per kill, each stage in ms after the call left the client: the committers', the
    receivers' (two a kill), and (the last of the three swaps, the committer's stamps,
    the two receivers' in the order they read the push)."""
    series = json.loads((out / "raw.json").read_text())["series"]
    sent = dict(zip((int(g) for g in series["gens"]), series["sent_mono"], strict=True))
    per_pid = [json.loads(p.read_text()) for p in sorted(out.glob("stages-*.json"))]
    committers: list[Stamps] = []
    receivers: list[Stamps] = []
    last: list[Kill] = []
    for gen in sorted(int(g) for g in series["kills"]):
        t0 = sent[gen]
        mine: Stamps | None = None
        theirs: list[Stamps] = []
        for stamps in per_pid:
            for role, into in (("committer", None), ("receiver", theirs)):
                got = stamps[role].get(str(gen))
                if got is None:
                    continue
                first: Stamps = {}
                for name, ns in got:
                    first.setdefault(name, (ns / 1e9 - t0) * 1000)
                if into is None:
                    mine = first
                else:
                    into.append(first)
        if mine is not None:
            committers.append(mine)
        receivers += theirs
        if mine is not None and len(theirs) == 2:
            theirs.sort(key=lambda r: r["push.rx"])
            last.append((max(mine["applied"], *(r["applied"] for r in theirs)), mine, theirs))
    return committers, receivers, last


def rows(stamps: list[Stamps], order: list[str]) -> list[tuple[str, int, float, float, float]]:
    """(stage, n, p50 ms after the send, p50 and p90 ms since the stage before)."""
    out = []
    prev: str | None = None
    for name in order:
        at = [s[name] for s in stamps if name in s]
        took = [s[name] - s[prev] for s in stamps if name in s and prev in s] if prev else at
        out.append((name, len(at), statistics.median(at) if at else 0.0,
                    statistics.median(took) if took else 0.0, pct(took, 0.9) if took else 0.0))
        prev = name
    return out


def fanout(last: list[Kill]) -> list[tuple[str, list[float]]]:
    """From the EVALSHA's send on: the committer's reply read and swap, each receiver's
    push read and swap (the first to read it, the second), the last swap of the three.
    On a machine with fewer vCPUs than woken processes, the second receiver's read waits
    for a vCPU: what the others spend between the publish and the last swap is its delay."""
    def since(pick: str) -> list[float]:
        out = []
        for tail, c, rs in last:
            v = {"reply": c.get("commit.reply_rx"), "c_applied": c["applied"],
                 "rx1": rs[0]["push.rx"], "rx2": rs[1]["push.rx"],
                 "app1": rs[0]["applied"], "app2": rs[1]["applied"], "last": tail}[pick]
            # (a kill whose echo was read before its reply was put in force by the echo:
            # no reply stamp)
            if v is not None and "commit.evalsha_send" in c:
                out.append(v - c["commit.evalsha_send"])
        return out or [0.0]
    return [("the committer reads its reply", since("reply")),
            ("the committer swapped", since("c_applied")),
            ("the first receiver reads the push", since("rx1")),
            ("the second receiver reads the push", since("rx2")),
            ("the first receiver swapped", since("app1")),
            ("the second receiver swapped", since("app2")),
            ("the last of the three swapped", since("last"))]


def redis_side(out: Path) -> list[tuple[str, int, float, float]]:
    """(command, n, p50 µs, p90 µs) of what redis ran during the series, by command and
    script (the commit's: the one naming the audit stream)."""
    red = json.loads((out / "raw.json").read_text()).get("redis") or {}
    kinds: dict[str, list[float]] = {}
    for dur, cmd, _client in red.get("slowlog", []):
        words = cmd.split()
        kind = words[0].upper() if words else "?"
        if kind == "EVALSHA" and len(words) > 3:
            kind = f"EVALSHA {words[1][:8]} ({' '.join(words[3:5])}{', …' if len(words) > 5 else ''})"
            if words[1] == _COMMIT.sha:
                kind = f"EVALSHA the commit script ({words[1][:8]})"
        kinds.setdefault(kind, []).append(float(dur))
    return sorted(((k, len(v), statistics.median(v), pct(v, 0.9)) for k, v in kinds.items()),
                  key=lambda r: -r[1])


def report(out: Path) -> int:
    committers, receivers, last = by_kill(out)
    never = [f"{role} {name}" for role, stamps, order in (
        ("committer", committers, COMMITTER), ("receiver", receivers, RECEIVER))
        for name in order if not any(name in s for s in stamps)]
    print(f"\n# Stages of {len(last)} kills, 20 ms apart (ms after the call left the client, "
          "CLOCK_MONOTONIC)\n")
    for title, stamps, order in (("the committer (the instance the call reached)",
                                  committers, COMMITTER),
                                 ("the two others (pooled)", receivers, RECEIVER)):
        print(f"## {title}, n={len(stamps)}\n\n| stage | n | at p50 | took p50 | took p90 |\n"
              "|---|---|---|---|---|")
        for name, n, at, took, took90 in rows(stamps, order):
            print(f"| {name} | {n} | {at:.3f} | {took:.3f} | {took90:.3f} |")
        print()
    print("## the committer after its swap (until its answer waits for the fleet's acks)\n\n"
          "| stage | n | at p50 | took p50 | took p90 |\n|---|---|---|---|---|")
    for name, n, at, took, took90 in rows(committers, AFTER)[1:]:
        print(f"| {name} | {n} | {at:.3f} | {took:.3f} | {took90:.3f} |")
    echo = [c["after.echo_done"] - c["after.echo_rx"] for c in committers if "after.echo_rx" in c]
    if echo:
        print(f"| its own push read (echo), n={len(echo)} | | | {statistics.median(echo):.3f} | "
              f"{pct(echo, 0.9):.3f} |")
    print()
    if last:
        tails = [t for t, _, _ in last]
        lag_rx = [c["commit.reply_rx"] - c["commit.evalsha_send"] for _, c, _ in last
                  if "commit.reply_rx" in c and "commit.evalsha_send" in c]
        print(f"the last of the three applied: {statistics.median(tails):.3f} ms p50, "
              f"{pct(tails, 0.9):.3f} p90, {pct(tails, 0.99):.3f} p99 (n={len(tails)})")
        who = sum(1 for t, c, _ in last if t == c["applied"])
        print(f"the committer applied last in {who} of {len(last)} kills")
        if lag_rx:
            print(f"EVALSHA sent → its reply read at the committer: "
                  f"{statistics.median(lag_rx):.3f} ms p50, {pct(lag_rx, 0.9):.3f} p90")
    if last:
        print("\n## after the EVALSHA left the committer, per kill (ms)\n\n"
              "| event | p50 | p90 |\n|---|---|---|")
        for label, xs in fanout(last):
            print(f"| {label} | {statistics.median(xs):.3f} | {pct(xs, 0.9):.3f} |")
    reds = redis_side(out)
    if reds:
        print("\n## redis, every command of the series (SLOWLOG at 0 µs)\n\n"
              "| command | n | µs p50 | µs p90 |\n|---|---|---|---|")
        for kind, n, p50, p90 in reds:
            print(f"| {kind} | {n} | {p50:.0f} | {p90:.0f} |")
    if never:
        print(f"\nkill_stages: no kill stamped {', '.join(never)}: the hooked function is no "
              "longer on a kill's path (benchmarks/killstages/)", file=sys.stderr)
        return 1
    return 0


def summary(outs: list[Path]) -> None:
    """Several runs: each stage's p50 and p90 (the median of the runs' own), and each
    run's p50 (a shared machine's runs differ; the median of three is RESULTS's figure)."""
    data = [by_kill(out) for out in outs]
    print(f"\n# Medians of {len(outs)} runs (ms after the call left the client; took in µs)\n")
    for title, idx, order in (("the committer", 0, COMMITTER), ("the two others", 1, RECEIVER),
                              ("the committer after its swap", 0, AFTER)):
        per = [rows(d[idx], order) for d in data]
        print(f"## {title}\n\n| stage | at p50 | took p50 | took p90 | runs' p50 |\n"
              "|---|---|---|---|---|")
        for j, name in enumerate(order):
            vals = [p[j] for p in per]
            print(f"| {name} | {statistics.median(v[2] for v in vals):.3f} | "
                  f"{statistics.median(v[3] for v in vals) * 1000:.0f} | "
                  f"{statistics.median(v[4] for v in vals) * 1000:.0f} | "
                  + " / ".join(f"{v[3] * 1000:.0f}" for v in vals) + " |")
        print()
    fans = [fanout(d[2]) for d in data]
    print("## after the EVALSHA left the committer, per kill (ms)\n\n"
          "| event | p50 | p90 | runs' p50 |\n|---|---|---|---|")
    for j, (label, _) in enumerate(fans[0]):
        p50s = [statistics.median(f[j][1]) for f in fans]
        print(f"| {label} | {statistics.median(p50s):.3f} | "
              f"{statistics.median(pct(f[j][1], 0.9) for f in fans):.3f} | "
              + " / ".join(f"{x:.3f}" for x in p50s) + " |")
    tails = [statistics.median(t for t, _, _ in d[2]) for d in data if d[2]]
    if tails:
        print(f"\nthe last of the three applied, p50: {statistics.median(tails):.3f} ms "
              f"(runs: {' / '.join(f'{t:.3f}' for t in tails)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--keep", type=Path, default=None, help="keep the stamps and raw figures here")
    ap.add_argument("--runs", type=int, default=1,
                    help="run it this many times (each kept in DIR/run-N): each run's "
                         "breakdown, then the medians")
    ap.add_argument("--from", dest="src", type=Path, nargs="+", default=None,
                    help="print the breakdown of runs kept with --keep (runs nothing; "
                         "several: their medians too)")
    args = ap.parse_args()
    if args.src is not None:
        failed = max(report(src) for src in args.src)
        if len(args.src) > 1:
            summary(args.src)
        return failed
    gone = missing()
    if gone:
        for line in gone:
            print(f"kill_stages: {line}", file=sys.stderr)
        return 1
    keep = args.keep or Path(tempfile.mkdtemp(prefix="kg-stages-"))
    outs = [keep] if args.runs == 1 else [keep / f"run-{i + 1}" for i in range(args.runs)]
    failed = 0
    for out in outs:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("stages-*.json"):
            old.unlink()
        env = dict(os.environ, KG_STAGES_OUT=str(out), PYTHONPATH=os.pathsep.join(filter(
            None, [str(ROOT / "benchmarks/killstages"), str(ROOT), os.environ.get("PYTHONPATH")])))
        print(f"\n# run {outs.index(out) + 1} of {len(outs)}, load average "
              f"{Path('/proc/loadavg').read_text().split()[0]} at its start")
        subprocess.run([sys.executable, str(ROOT / "benchmarks/killswitch.py"),
                        "--propagation-only", "--kills", str(args.kills),
                        "--raw", str(out / "raw.json"), "--slowlog"], env=env, check=True, cwd=ROOT)
        failed = max(failed, report(out))
    if len(outs) > 1:
        summary(outs)
    return failed


if __name__ == "__main__":
    raise SystemExit(main())
