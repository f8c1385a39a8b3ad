"""What a quiet CPU costs: the same work, back to back and after the process slept.

Run:  .venv/bin/python benchmarks/cold_path.py

A kill arrives at a gateway that has been idle, so every step of the kill path runs
"cold". On the 2-vCPU microVMs we measure on (Firecracker with nested paging), code that
has just been switched back in runs several times slower than the same code in a loop:
this script prints, side by side, (1) a JWT signature check, (2) a Redis GET through
redis-py, (3) the same GET through the store's own RESP connection (gateway/state/resp.py),
and the kill path's own steps: on every instance a pushed kill is (4) a signature check of the
state document, (5) its decoding (json + validation) and (6) the flip of the killed route's
plan; (7) is the three in a row, as an instance runs them; on the instance that commits,
(8) builds the new document and seals it and its audit event (before the one round trip).
Each back to back and after 1 ms / 20 ms of sleep, p50 and p90 in µs. A redis-server is
started on a free loopback port and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _procs import SECRET, free_port, pct  # noqa: E402

N = 300
GAPS = (0.0, 0.001, 0.02)


async def series(fn: Callable[[], Awaitable[object]]) -> list[tuple[float, float]]:
    out = []
    for gap in GAPS:
        xs = []
        for _ in range(N):
            if gap:
                await asyncio.sleep(gap)  # the process sleeps, as an idle gateway does
            t0 = time.perf_counter()
            await fn()
            xs.append((time.perf_counter() - t0) * 1e6)
        out.append((pct(xs, 0.5), pct(xs, 0.9)))
    return out


async def run(port: int) -> dict[str, list[tuple[float, float]]]:
    import jwt
    import redis.asyncio as aioredis

    from gateway.admin.tokens import mint
    from gateway.state.resp import Endpoint, connect

    tok = mint(SECRET, "bench", "killgate:admin", 3600, "killgate", "killgate-admin")

    async def check_jwt() -> None:
        jwt.decode(tok, SECRET, algorithms=["HS256"], audience="killgate-admin",
                   issuer="killgate", options={"require": ["exp", "iat", "sub"]})

    r = aioredis.Redis(host="127.0.0.1", port=port)
    conn = await connect(Endpoint(port=port), 2.0)
    try:
        return {"JWT signature check (pyjwt)": await series(check_jwt),
                "Redis GET through redis-py": await series(lambda: r.get("k")),
                "Redis GET through state/resp.py": await series(
                    lambda: conn.call("GET", "k", timeout=2.0)),
                **await kill_steps()}
    finally:
        await r.aclose()
        await conn.aclose()


async def kill_steps() -> dict[str, list[tuple[float, float]]]:
    """(4)-(8): the work a kill costs an instance, as gateway/state does it."""
    from gateway.configfile import LoadedConfig, parse_config_text
    from gateway.control.table import TableHolder
    from gateway.domain.audit import GENESIS, AuditDraft, seal
    from gateway.domain.statedoc import Change, KillFlag, StateDoc, apply_change
    from gateway.state.signing import Key, Keyring
    from gateway.state.store import decode_doc

    cfg = parse_config_text("""
routes:
  - name: bench
    match: {path_prefix: /}
    stable: v1
    versions:
      - {name: v1, url: "http://127.0.0.1:1", weight: 100}
      - {name: v2, url: "http://127.0.0.1:2", weight: 0}
""")
    keys = Keyring(Key.of(SECRET.encode()), context="kgbench")
    base = StateDoc(generation=5)
    flag = KillFlag("version", "bench", "v2", "bench", "bench", "2026-01-01T00:00:00Z", 6)
    change = Change(kills={flag.key: flag})
    draft = AuditDraft(actor="bench", action="kill", target={"scope": "version"},
                       reason="bench", source="bench")
    mac_key = ("k", SECRET.encode())

    def build() -> tuple[bytes, StateDoc]:
        new = apply_change(base, change)
        ev = seal(draft.as_event(), GENESIS, mac_key)
        body = json.dumps({**new.to_json(), "audit_head": ev["hash"]}).encode()
        return keys.seal(b"state", body), new

    sealed, _ = build()
    holder = TableHolder(LoadedConfig(cfg, "sha256:bench", None), base)
    unkilled = holder.held

    async def verify() -> None:
        keys.open(b"state", sealed)

    body = keys.open(b"state", sealed)[0]

    async def decode() -> None:
        decode_doc(body)

    doc = decode_doc(body)

    async def flip() -> None:
        holder.held = unkilled
        holder.apply_doc(doc)

    async def whole() -> None:
        holder.held = unkilled
        holder.apply_doc(decode_doc(keys.open(b"state", sealed)[0]))

    async def commit() -> None:
        build()

    return {"push: signature check of the document (HMAC-SHA256)": await series(verify),
            "push: decoding (json + validation)": await series(decode),
            "push: the killed route's plan flipped (TableHolder.apply_doc)": await series(flip),
            "push: the three in a row": await series(whole),
            "commit: the document and audit event built and sealed": await series(commit)}


def main() -> int:
    global N
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=N, help="measurements per cell")
    N = ap.parse_args().n
    if shutil.which("redis-server") is None:
        print("redis-server is missing: apt-get install -y redis-server", file=sys.stderr)
        return 1
    import uvloop

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True,
                             text=True).stdout.strip() != "PONG":
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        res = uvloop.run(run(port))
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"\ncold-path costs — {time.strftime('%Y-%m-%d %H:%M')} — n={N} per cell — "
          "p50 / p90 µs\n")
    head = ["work"] + ["back to back" if g == 0 else f"after {g * 1000:g} ms asleep"
                       for g in GAPS] + ["cold / warm (p50)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, cells in res.items():
        ratio = cells[-1][0] / cells[0][0]
        print(f"| {name} | " + " | ".join(f"{a:.0f} / {b:.0f}" for a, b in cells)
              + f" | {ratio:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
