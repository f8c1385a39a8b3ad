"""Instructions per stage of a kill, in process, under callgrind (the count does not move
with the machine's load, as wall times on a shared machine do).

Run:  .venv/bin/python benchmarks/kill_instructions.py [--calls 200] [--stages a,b]
                                                     [--routes 1]

Runs itself under `valgrind --tool=callgrind`: builds the benchmark's document the way
`killswitch.py --propagation-only` leaves it (route `bench`, v1/v2, 400 kills and unkills
of `version:bench:v2` made through the admin's own plans: generation 401, its `writes`
window, `lifted`, history, identities; ~1.4 KB signed), then runs each stage `--calls`
times between two callgrind client requests (zero, dump: a tiny C helper built with gcc
against valgrind/callgrind.h) and prints the instructions per call:

* committer: `plan` (intent + plan, as the handler builds them), `change` (the kill's
  change, apply_change, the audit draft), `seal` (what the commit sends: the audit event's
  id, time, hash and MAC, the document's JSON and its signature, the event's JSON; the
  code of RedisCommits.commit through `rediscommit.seal_commit`), `own` (the document as
  stored: `_Own.doc`);
* receiver (and the committer, from `swap`): `verify` (Keyring.open), `decode`
  (store.decode_doc), `swap` (branches.relaxes + TableHolder.apply_doc: the table rebuilt
  for the new document, no listeners), `listen` (what the serving holder's listeners read
  of a swap: the in-flight cut's `newly_aborting`, ConfigHistory.kills_changed, the
  override warnings; on the kill's and the unkill's tables as a swap makes them: plans
  the change leaves are the same objects);
* `recvswap`: `swap` on the documents as a receiver holds them (decoded from the pushed
  bytes in turn, by the receiver's decoder: state/shareddecode.py's, which shares each
  value equal to the last document's; before it, none was shared and which routes
  changed was answered by comparing every route's values).

* `localread`: the file store's read of its state file after another writer (another worker
  of the group) replaced it with the next document (kill, unkill, ...: `LocalStore._read`,
  verify and decode), the file's writing measured alone (`localreadcopy`) and subtracted;
  `localpoll`: the same read of a file unchanged since the last (every poll of the sync
  loop).

`decode` is the receiver's too (its SharedDecoder, a kill's document after its unkill's
and back, when there is one; else store.decode_doc).

`--routes N` adds N-1 routes (r1.., v1/v2) with 5 history entries each to the config and
the document (a large deployment: the swap compares each route's history).

A kill and an unkill alternate (each stage sees both, as the benchmark's calls do); an
empty stage's count (the helper's own calls) is subtracted. Needs valgrind and gcc.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HELPER = r"""
#include <valgrind/callgrind.h>
void kg_zero(void) { CALLGRIND_ZERO_STATS; }
void kg_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
"""
CONFIG = """
routes:
  - name: bench
    match: {path_prefix: /}
    stable: v1
    versions:
      - {name: v1, url: "http://127.0.0.1:9", weight: 100}
      - {name: v2, url: "http://127.0.0.1:9", weight: 0}
"""
STAGES = ("empty", "plan", "change", "seal", "own", "verify", "decode", "swap", "recvswap",
          "listen", "localread", "localpoll")
EXTRA_ROUTE = """
  - name: r{i}
    match: {{path_prefix: /r{i}/}}
    stable: v1
    versions:
      - {{name: v1, url: "http://127.0.0.1:9", weight: 100}}
      - {{name: v2, url: "http://127.0.0.1:9", weight: 0}}
"""


def _fixture(routes: int = 1) -> dict[str, object]:
    from gateway.admin import actions
    from gateway.configfile import LoadedConfig, parse_config_text
    from gateway.domain.statedoc import HistoryEntry, StateDoc, apply_change
    from gateway.state.signing import Key, Keyring

    cfg = parse_config_text(CONFIG + "".join(EXTRA_ROUTE.format(i=i) for i in range(1, routes)))
    t = "2026-12-06T06:55:09.994Z"
    url = "http://127.0.0.1:9"
    history = {f"r{i}": tuple(HistoryEntry("v2" if j % 2 else "v1", t, "alice",
                                           f"rollout step {j}", url, None, 1)
                              for j in range(5)) for i in range(1, routes)}
    doc = StateDoc(generation=1, history={"bench": (HistoryEntry(
        "v1", t, "killgate/config", "config sha256:9c24c8664dc6", url, None, 1),), **history},
        identities={"bench": {v: {"url": url, "artifact": None, "time": t}
                              for v in ("v1", "v2")}})
    sel = {"scope": "version", "route": "bench", "version": "v2"}

    def plan(action: str) -> actions.Plan:
        i = actions.intent(action, dict(sel), None, cfg, "bench", "benchmark", "req-1",
                           "127.0.0.1")
        return actions.plan(i, cfg)

    for _ in range(200):  # the benchmark's warm-up and calls: kill, unkill, ...
        for action in ("kill", "unkill"):
            doc = apply_change(doc, plan(action).change(doc))  # type: ignore[arg-type]
    doc = doc.with_changes(audit_head="ab" * 32, audit_seq=doc.generation)
    keys = Keyring(Key.of(b"k" * 32), context="kgbench")
    return {"cfg": cfg, "loaded": LoadedConfig(cfg, "sha256:x", None), "doc": doc,
            "keys": keys, "plan": plan}


def _seal(keys, plain_doc, base, head, seq):  # type: ignore[no-untyped-def]
    """What RedisCommits.commit builds to send (its own code when it is a function)."""
    from gateway.state import rediscommit
    mac_key = (keys.current.kid, keys.current.secret)
    fn = getattr(rediscommit, "seal_commit", None)
    if fn is not None:
        return fn(keys, plain_doc, base, head, seq, mac_key)
    from gateway.domain.audit import seal  # (the code as it was inline)
    ev = seal(base, head, mac_key)
    body = json.dumps({**plain_doc, "audit_head": ev["hash"], "audit_seq": seq + 1}).encode()
    sealed = keys.seal(b"state", body)
    return ev, sealed, json.dumps(ev, ensure_ascii=False)


def _receiver_decode(decode_doc: Callable[[bytes], object]) -> Callable[[bytes], object]:
    """How a receiver decodes a pushed document: its store's SharedDecoder (each document
    shares what it has in common with the last one), or, before it, decode_doc."""
    try:
        from gateway.state.shareddecode import SharedDecoder
    except ImportError:
        return decode_doc
    return SharedDecoder().decode


def run_stages(calls: int, only: set[str], lib: ctypes.CDLL, routes: int = 1) -> None:
    from gateway.control.table import TableHolder
    from gateway.domain.branches import relaxes
    from gateway.domain.statedoc import apply_change
    from gateway.state import rediscommit
    from gateway.state.store import decode_doc

    fx = _fixture(routes)
    doc0, keys, plan, loaded = fx["doc"], fx["keys"], fx["plan"], fx["loaded"]
    # the two documents a kill and its unkill make, as sent (sealed) and as stored
    docs, pushed = [], []
    cur = doc0
    for action in ("kill", "unkill"):
        p = plan(action)  # type: ignore[operator]
        new = apply_change(cur, p.change(cur))  # type: ignore[arg-type]
        ev, sealed, _ = _seal(keys, new.to_json(), p.describe(cur, new).as_event(),
                              cur.audit_head, cur.audit_seq)  # type: ignore[union-attr]
        stored = new.with_changes(audit_head=ev["hash"], audit_seq=cur.audit_seq + 1)
        docs.append((cur, new, p, ev))
        pushed.append((sealed, stored))
        cur = stored

    def stage_plan(k: int) -> None:
        plan("kill" if k % 2 == 0 else "unkill")  # type: ignore[operator]

    def stage_change(k: int) -> None:
        cur, _new, p, _ev = docs[k % 2]
        new = apply_change(cur, p.change(cur))
        p.describe(cur, new)

    drafts = [(new.to_json(), p.describe(cur, new), cur) for cur, new, p, _ in docs]

    def stage_seal(k: int) -> None:
        plain_doc, draft, cur = drafts[k % 2]
        _seal(keys, plain_doc, draft.as_event(), cur.audit_head, cur.audit_seq)

    def stage_own(k: int) -> None:
        cur, new, _p, ev = docs[k % 2]
        rediscommit._Own(b"", new, ev["hash"], cur.audit_seq + 1, None).doc()

    def stage_verify(k: int) -> None:
        keys.open(b"state", pushed[k % 2][0])  # type: ignore[union-attr]

    bodies = [keys.open(b"state", s)[0] for s, _ in pushed]  # type: ignore[union-attr]
    decode = _receiver_decode(decode_doc)

    def stage_decode(k: int) -> None:
        decode(bodies[k % 2])

    holder = TableHolder(loaded, doc0)  # type: ignore[arg-type]

    def stage_swap(k: int) -> None:
        doc = pushed[k % 2][1]
        doc = doc.with_changes(generation=10_000 + k)  # (each one newer: applied)
        relaxes(holder.doc, doc)
        holder.apply_doc(doc)

    # as a receiver holds them: decoded from the bytes pushed (nothing shared)
    decode = _receiver_decode(decode_doc)
    decode(json.dumps(doc0.to_json()).encode())  # type: ignore[union-attr]
    received = [decode(b) for b in bodies]  # (in turn, as pushed: each shares what it can)
    recv_holder = TableHolder(loaded, doc0)  # type: ignore[arg-type]

    def stage_recvswap(k: int) -> None:
        doc = received[k % 2].with_changes(generation=10_000 + k)
        relaxes(recv_holder.doc, doc)
        recv_holder.apply_doc(doc)

    from gateway.control.confighistory import ConfigHistory
    from gateway.control.table import _warn_unservable
    from gateway.domain.kills import newly_aborting
    # the kill's table and the unkill's, the second swapped in from the first as an
    # instance does (rebuild_table: the plans of routes the unkill leaves are the kill's)
    swapped = TableHolder(loaded, pushed[0][1])  # type: ignore[arg-type]
    tables = [swapped.table]
    swapped.apply_doc(pushed[1][1])  # type: ignore[arg-type]
    tables.append(swapped.table)

    def stage_listen(k: int) -> None:
        old, new = tables[(k + 1) % 2], tables[k % 2]
        newly_aborting(old.doc, new.doc)
        ConfigHistory.kills_changed(None, old, new)  # type: ignore[arg-type]
        _warn_unservable(old, new)

    from gateway.state.local import LocalStore
    folder = Path(tempfile.mkdtemp(prefix="kg-killinstr-local-"))
    local = LocalStore(folder / "state.json", keys=keys.bound("local"))  # type: ignore[union-attr]
    local_raw = [keys.bound("local").seal(b"state", b)  # type: ignore[union-attr]
                 for b in [json.dumps(d.to_json()).encode() for _, d in pushed]]

    (folder / "state.json").write_bytes(local_raw[1])  # (what `localpoll` reads)

    def stage_localwrite(k: int) -> None:
        (folder / "state.json").write_bytes(local_raw[k % 2])

    def stage_localread(k: int) -> None:
        stage_localwrite(k)
        assert local._read().doc is not None

    def stage_localpoll(k: int) -> None:
        assert local._read().doc is not None

    fns: dict[str, Callable[[int], None]] = {
        "empty": lambda k: None, "plan": stage_plan, "change": stage_change,
        "seal": stage_seal, "own": stage_own, "verify": stage_verify,
        "decode": stage_decode, "swap": stage_swap, "recvswap": stage_recvswap,
        "listen": stage_listen, "localread": stage_localread, "localpoll": stage_localpoll}
    gc.collect()
    gc.freeze()  # (the fixture's heap out of the cyclic collector: at --routes 500 a full
    # collection falling inside a stage or not moved its count by ~0.5M)
    for name in STAGES:
        if name not in only and name != "empty":
            continue
        fn = fns[name]
        for k in range(20):  # warm: caches, specialisation
            fn(k)
        if name == "swap":
            holder = TableHolder(loaded, doc0)  # type: ignore[arg-type]
        if name == "recvswap":
            recv_holder = TableHolder(loaded, doc0)  # type: ignore[arg-type]
        # (the with_changes of `swap` is the benchmark's, not the instance's: measured
        # alone as `swapcopy` and subtracted)
        lib.kg_zero()
        for k in range(calls):
            fn(k)
        lib.kg_dump(name.encode())
        if name == "localread":
            lib.kg_zero()
            for k in range(calls):
                stage_localwrite(k)
            lib.kg_dump(b"localreadcopy")
        if name in ("swap", "recvswap"):
            lib.kg_zero()
            for k in range(calls):
                (pushed[k % 2][1] if name == "swap" else received[k % 2]).with_changes(
                    generation=10_000 + k)
            lib.kg_dump(f"{name}copy".encode())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--stages", default=",".join(STAGES[1:]))
    ap.add_argument("--routes", type=int, default=1,
                    help="routes in the config and document (each past the first with 5 "
                         "history entries)")
    ap.add_argument("--inner", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    only = set(args.stages.split(","))
    if args.inner is not None:  # under valgrind
        run_stages(args.calls, only, ctypes.CDLL(str(args.inner)), args.routes)
        return 0
    work = Path(tempfile.mkdtemp(prefix="kg-killinstr-"))
    (work / "h.c").write_text(HELPER)
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(work / "h.so"),
                    str(work / "h.c")], check=True)
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/cg.out",
                    sys.executable, __file__, "--calls", str(args.calls), "--stages",
                    args.stages, "--routes", str(args.routes), "--inner", str(work / "h.so")], check=True,
                   capture_output=True, env=dict(os.environ, PYTHONHASHSEED="0"))
    counts: dict[str, int] = {}
    for f in work.glob("cg.out.*"):
        text = f.read_text(errors="replace")
        trigger = re.search(r"^desc: Trigger: Client Request: (\S+)", text, re.M)
        total = re.search(r"^summary: (\d+)", text, re.M)
        if trigger and total:
            counts[trigger.group(1)] = int(total.group(1))
    empty = counts.get("empty", 0)
    print(f"instructions per call ({args.calls} calls each, {args.routes} route(s), an empty stage's "
          f"{empty / args.calls:,.0f} subtracted)\n\n| stage | instructions |\n|---|---|")
    for name in STAGES[1:]:
        if name in counts:
            n = counts[name] - empty
            if name in ("swap", "recvswap", "localread"):
                n -= counts.get(f"{name}copy", 0) - empty
            print(f"| {name} | {n / args.calls:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
