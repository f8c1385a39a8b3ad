"""Instructions per request of the floor servers (callgrind): what `instructions.py`'s
figure for killgate sits on.

    .venv/bin/python benchmarks/floor_instructions.py [--kinds minproxy,httptools]
        [--requests 3000] [--keep DIR]

Each kind of `floor_servers.py` (`minproxy`: a raw uvloop Protocol passing the bytes through
to a kept-alive backend connection, httptools parsing both directions; `httptools`: the same
Protocol answering a fixed body itself) runs under `valgrind --tool=callgrind`, started
uninstrumented; after a warm-up, instrumentation is switched on for `--requests` POSTs of
`instructions.py`'s body over one keep-alive connection (as `instructions.py` sends them,
to `benchmarks/backend.py` for `minproxy`), then off, and the count is divided by the
requests. These servers run no timers and no tasks between requests, so no idle rate is
subtracted. `--keep DIR` keeps the callgrind files (`callgrind_annotate` shows where the
instructions go). Needs valgrind.
"""

from __future__ import annotations

import argparse
import http.client
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _procs import Procs, free_port, start_backend
from harness import REQUEST_BODY as BODY

HERE = Path(__file__).resolve().parent


def _batch(port: int, n: int, conn: http.client.HTTPConnection | None = None,
           ) -> http.client.HTTPConnection:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    for _ in range(n):
        c.request("POST", "/v2/models/m/infer", BODY, {"content-type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"status {r.status}")
    return c


def _control(pid: int, *flags: str) -> None:
    subprocess.run(["callgrind_control", *flags, str(pid)], check=True, capture_output=True,
                   timeout=120)


def measure(kind: str, requests: int, work: Path, procs: Procs) -> int:
    """Instructions per request of one floor server of `kind`."""
    backend = start_backend(procs, work / "backend.log", 0)
    port = free_port()
    out = work / f"{kind}.callgrind.out"
    p = procs.start(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                     f"--callgrind-out-file={out}", sys.executable,
                     str(HERE / "floor_servers.py"), "--kind", kind, "--port", str(port),
                     "--backend-port", str(backend)], work / f"{kind}.log")
    deadline = time.monotonic() + 600
    while True:  # (valgrind starts slowly)
        try:
            _batch(port, 1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{kind}: never answered") from None
            time.sleep(0.5)
    c = _batch(port, 200)  # warm, on the connection measured
    _control(p.pid, "-i", "on")
    _batch(port, requests, c)
    _control(p.pid, "-i", "off")
    _control(p.pid, "-d")
    c.close()
    deadline = time.monotonic() + 60
    while (total := _counted(work, kind)) == 0:  # (the dump is written by the server)
        if time.monotonic() > deadline:
            raise SystemExit(f"{kind}: no instruction count")
        time.sleep(0.5)
    return total // requests


def _counted(work: Path, kind: str) -> int:
    total = 0
    for f in work.glob(f"{kind}.callgrind.out.*"):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default="minproxy,httptools")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for kind in args.kinds.split(","):
            procs = Procs()
            try:
                print(f"{kind:>10}: {measure(kind, args.requests, work, procs):,} Ir/request",
                      flush=True)
            finally:
                procs.stop()


if __name__ == "__main__":
    main()
