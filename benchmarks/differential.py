"""The same raw request sequences against killgate at an earlier revision and at this
checkout, in front of the same two echo backends (each answer names the version that
answered and holds the head it received): every status, route, version and forwarded head
must be the same. A check that a data-plane change meant to be faster routes and forwards
nothing differently (written for impperf5's cuts: a connection's last target and Host, the
last match found by `is`; review revproto8, which found no difference).

    .venv/bin/python benchmarks/differential.py --before 20781102 [SEQUENCE ...]

Sequences (see SEQS): keep-alive with changing Hosts, a refused Host or target in between,
a Host absent then present, non-ASCII Hosts, absolute-form, case and percent-encoding,
over-long targets and Hosts, pipelined, `model` routes, HEAD, and reloads, a kill, a
weight change in the middle of a connection; then two connections interleaved with a third
that overflows the caches (1,200 distinct targets and Hosts). Exit status 1 on a difference.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import SECRET, admin_token, free_port  # noqa: E402

PY = sys.executable
Step = bytes | list[bytes] | tuple[str, Any]


def echo_backend(name: str) -> int:
    """A raw backend: each request's head (less Via and x-request-id) and body, as JSON."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve(c: socket.socket) -> None:
        buf = b""
        with c:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                fields = {k.strip().lower(): v.strip() for k, _, v in
                          (line.partition(b":") for line in lines[1:])}
                if b"transfer-encoding" in fields:
                    while b"0\r\n\r\n" not in buf:
                        buf += c.recv(65536)
                    body, _, buf = buf.partition(b"0\r\n\r\n")
                else:
                    n = int(fields.get(b"content-length", b"0"))
                    while len(buf) < n:
                        buf += c.recv(65536)
                    body, buf = buf[:n], buf[n:]
                kept = [h.decode("latin-1") for h in lines
                        if not h.lower().startswith((b"x-request-id", b"via"))]
                out = json.dumps({"v": name, "head": kept,
                                  "body": body.decode("latin-1")}).encode()
                c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                          b"content-length: %d\r\n\r\n%s" % (len(out), out))

    def accept() -> None:
        while True:
            c, _ = srv.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(srv.getsockname()[1])


def routes(variant: int, p1: int, p2: int) -> str:
    def route(name: str, match: str, stable: str, versions: str) -> str:
        return (f"  - name: {name}\n    match: {{{match}}}\n    stable: {stable}\n"
                f"    versions:\n{versions}")

    def v(name: str, port: int, weight: int | None = None) -> str:
        w = "" if weight is None else f", weight: {weight}"
        return f'      - {{name: {name}, url: "http://127.0.0.1:{port}"{w}}}\n'

    iris = "path_prefix: /v2/models/iris"
    hosted = "path_prefix: /h, host: api.example.com"
    if variant == 0:
        return (route("iris", iris, "v1", v("v1", p1, 100) + v("v2", p2, 0))
                + route("hosted", hosted, "v2", v("v2", p2))
                + route("Folded", "path_prefix: /Fold, case_sensitive: false", "v2", v("v2", p2))
                + route("modeled", "path_prefix: /m, model: gpt", "v2", v("v2", p2)))
    if variant == 1:
        return (route("iris", iris, "v2", v("v1", p1, 0) + v("v2", p2, 100))
                + route("hosted", "path_prefix: /h, host: other.example.com", "v1", v("v1", p1)))
    return (route("hdr", iris + ", header: {x-lane: b}", "v2", v("v2", p2))
            + route("iris", iris, "v1", v("v1", p1))
            + route("hosted", hosted, "v2", v("v2", p2)))


class Gateway:
    """`killgate serve` from `tree` (its own local state store, in `workdir`)."""

    def __init__(self, tree: Path, workdir: Path, ports: tuple[int, int]) -> None:
        self.dir, self.ports = workdir, ports
        workdir.mkdir(parents=True)
        self.data, self.admin = free_port(), free_port()
        self.cfg = workdir / "killgate.yaml"
        self.write(0)
        env = dict(os.environ, KILLGATE_TEST_SECRET=SECRET, PYTHONPATH=str(tree))
        self.logf = open(workdir / "log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([PY, "-m", "gateway", "serve", "-c", str(self.cfg)],
                                     cwd=tree, env=env, stdout=self.logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while not self._ready():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"{tree}: not ready; see {workdir / 'log'}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/readyz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def write(self, variant: int) -> None:
        self.cfg.write_text(
            f"listen: 127.0.0.1:{self.data}\nadmin:\n  listen: 127.0.0.1:{self.admin}\n"
            f"  auth:\n    hs256_secret_env: KILLGATE_TEST_SECRET\nstate:\n  backend: local\n"
            f"  path: {self.dir}/store.json\n  snapshot_path: {self.dir}/snapshot.json\n"
            f"  poll_interval: 50ms\nroutes:\n" + routes(variant, *self.ports))
        self.cfg.chmod(0o600)

    def act(self, step: tuple[str, Any]) -> None:
        """A reload (SIGHUP, until its outcome is logged), a kill or unkill, or weights."""
        kind, arg = step
        if kind == "reload":
            log = self.dir / "log"
            before = log.read_bytes().count(b"config_re")
            self.write(arg)
            self.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while log.read_bytes().count(b"config_re") == before:
                assert time.monotonic() < deadline, "the reload was not logged"
                time.sleep(0.02)
            return
        path, method, body = (("/v1/routes/iris/weights", "PUT", {"weights": arg})
                              if kind == "weights" else
                              (f"/v1/{kind}", "POST", {"scope": "route", "route": arg}))
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.admin}{path}", method=method,
            data=json.dumps({**body, "reason": "differential"}).encode(),
            headers={"Authorization": "Bearer " + admin_token("killgate:kill killgate:rollout"),
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5):
            pass
        time.sleep(0.3)  # (the local store's poll: 50 ms)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)
        self.logf.close()


def read_answer(f: BinaryIO, head: bool = False) -> tuple[Any, ...]:
    line = f.readline()
    if not line:
        return ("EOF",)
    n, kept = 0, []
    while (h := f.readline()) not in (b"\r\n", b""):
        k = h.partition(b":")[0].lower()
        if k == b"content-length":
            n = int(h.partition(b":")[2])
        elif k in (b"connection", b"x-killgate-route", b"x-killgate-version"):
            kept.append(h.strip().decode())
    raw = f.read(n) if n and not head else b""
    body: Any
    try:
        body = json.loads(raw)
    except ValueError:
        body = re.sub(r'"request_id": ?"[^"]*"', "", raw.decode("latin-1"))
    return (line.split(b" ")[1].decode(), kept, body)


def run(gw: Gateway, seq: list[Step]) -> list[tuple[Any, ...]]:
    def connect() -> tuple[socket.socket, BinaryIO]:
        s = socket.create_connection(("127.0.0.1", gw.data), timeout=5)
        return s, s.makefile("rb")

    s, f = connect()
    out: list[tuple[Any, ...]] = []
    for step in seq:
        if isinstance(step, tuple):
            gw.act(step)
            continue
        batch = step if isinstance(step, list) else [step]
        s.sendall(b"".join(batch))
        for one in batch:
            try:
                out.append(read_answer(f, one.startswith(b"HEAD ")))
            except OSError as exc:
                out.append(("ERR", repr(exc)))
            if out[-1][0] in ("EOF", "ERR") or "connection: close" in out[-1][1]:
                s.close()
                s, f = connect()
                break
    s.close()
    return out


def R(target: bytes, host: bytes | None = b"gw.local", extra: bytes = b"",
      method: bytes = b"GET", body: bytes | None = None) -> bytes:
    h = b"%s %s HTTP/1.1\r\n" % (method, target)
    if host is not None:
        h += b"host: %s\r\n" % host
    if body is not None:
        extra += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    return h + extra + b"\r\n" + (body or b"")


IRIS = b"/v2/models/iris/infer"
LONG_T = b"/v2/models/iris/" + b"a" * 3000
LONG_H = b".".join(b"%c" % (97 + i % 26) * 60 for i in range(40)) + b".example"
H = b"api.example.com"
SEQS: dict[str, list[Step]] = {
    "keepalive": [R(IRIS), R(IRIS), R(IRIS, b"API.example.com"), R(b"/h/x", H), R(b"/h/x", H + b":80"),
                  R(b"/h/x", H + b"."), R(b"/h/x")],
    "bad_host": [R(IRIS), R(IRIS, b"bad host"), R(IRIS), R(IRIS, b"a..b"), R(IRIS, b"a@b"), R(IRIS)],
    "no_host": [R(IRIS, None), R(IRIS), R(IRIS, None), R(b"/h/x", None), R(b"/h/x", H)],
    "non_ascii": [R(IRIS, "é.example".encode()), R(IRIS), R(IRIS, "é.example".encode("latin-1")), R(IRIS)],
    "bad_target": [R(IRIS), R(b"/v2/models/iris/%2e%2e/x"), R(IRIS), R(b"/v2/models/iris/a#b"),
                   R(b"/v2/models/iris/../x"), R(IRIS), R(b"*"), R(IRIS)],
    "absolute": [R(b"http://gw.local" + IRIS), R(IRIS), R(b"http://api.example.com/h/x", H), R(IRIS)],
    "case": [R(b"/V2/models/iris/infer"), R(IRIS), R(b"/fold/a"), R(b"/FOLD/a"), R(b"/Fold/a"),
             R(b"/v2/models/%69ris/infer"), R(IRIS), R(b"/v2/models/iris%2Finfer"),
             R(b"//v2//models/iris/infer"), R(IRIS)],
    "long": [R(LONG_T), R(LONG_T), R(IRIS), R(LONG_T), R(IRIS, LONG_H), R(IRIS, LONG_H), R(IRIS),
             R(b"/h/" + b"b" * 3000, H), R(b"/h/" + b"b" * 3000, H)],
    "pipelined": [[R(IRIS), R(IRIS), R(IRIS, H), R(b"/h/y", H), R(b"/h/y", H), R(IRIS)]],
    "pipelined_bad": [[R(IRIS), R(IRIS, b"x y"), R(IRIS)]],
    "no_host_pipelined": [[R(IRIS, None), R(IRIS), R(IRIS, None), R(b"/h/x", None)]],
    "model": [R(b"/m/chat", body=b'{"model":"gpt"}', method=b"POST"),
              R(b"/m/chat", body=b'{"model":"other"}', method=b"POST"), R(b"/m/chat"),
              R(b"/m/chat", body=b'{"model":"gpt"}', method=b"POST")],
    "head": [R(IRIS, method=b"HEAD"), R(IRIS), R(IRIS, method=b"HEAD"), R(IRIS, method=b"head")],
    "reloads": [R(IRIS), R(b"/h/x", H), ("reload", 1), R(IRIS), R(b"/h/x", H),
                R(b"/h/x", b"other.example.com"), ("reload", 2), R(IRIS),
                R(IRIS, extra=b"x-lane: b\r\n"), R(IRIS), R(b"/h/x", H), ("reload", 0), R(IRIS),
                R(IRIS, extra=b"x-lane: b\r\n"), R(b"/h/x", H), R(b"/fold/z")],
    "kill": [R(IRIS), R(IRIS), ("kill", "iris"), R(IRIS), R(IRIS), R(b"/h/x", H), ("unkill", "iris"),
             R(IRIS), R(IRIS)],
    "weights": [R(IRIS), ("weights", {"v1": 0, "v2": 100}), R(IRIS), R(IRIS)],
}


def interleaved(gw: Gateway) -> list[tuple[int, tuple[Any, ...]]]:
    """Two connections asking by turns while a third overflows the caches (CACHE_MAX)."""
    conns = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", gw.data), timeout=5)
        conns.append((s, s.makefile("rb")))
    plan: list[tuple[int, bytes]] = []
    for i in range(1200):
        plan.append((2, R(b"/v2/models/iris/t%d" % i, b"h%d.example.com" % i)))
        if i % 97 == 0:
            plan += [(0, R(IRIS)), (1, R(b"/h/x", H)), (0, R(b"/h/x", H)), (1, R(IRIS))]
    out = []
    for k, req in plan:
        s, f = conns[k]
        s.sendall(req)
        out.append((k, read_answer(f)))
    for s, _ in conns:
        s.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, metavar="REV", help="the earlier revision")
    ap.add_argument("sequences", nargs="*", help=f"of {', '.join(SEQS)} (default: all)")
    args = ap.parse_args()
    ports = (echo_backend("v1"), echo_backend("v2"))
    differences = 0
    with tempfile.TemporaryDirectory(prefix="killgate-differential-") as tmp:
        root = Path(tmp)
        subprocess.run(["git", "worktree", "add", "--detach", str(root / "before"),
                        args.before], cwd=ROOT, check=True, capture_output=True)
        try:
            for name in args.sequences or [*SEQS, "interleaved"]:
                gws = [Gateway(tree, root / f"{name}-{side}", ports)
                       for side, tree in (("before", root / "before"), ("now", ROOT))]
                try:
                    got = [interleaved(g) if name == "interleaved" else run(g, SEQS[name])
                           for g in gws]
                finally:
                    for g in gws:
                        g.stop()
                if got[0] == got[1]:
                    statuses = [a[1][0] if name == "interleaved" else a[0] for a in got[0]]
                    print(f"same  {name}: {len(statuses)} answers, {statuses[:16]}")
                    continue
                differences += 1
                print(f"DIFFERENT {name}")
                for i, (a, b) in enumerate(zip(*got, strict=False)):
                    if a != b:
                        print(f"  #{i}\n    {args.before}: {str(a)[:600]}\n    now: {str(b)[:600]}")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(root / "before")],
                           cwd=ROOT, capture_output=True)
    print(f"{differences} sequence(s) differ")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
