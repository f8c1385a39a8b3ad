"""What watching a multipart body for a second `model` part costs (formscan.py), in MB/s,
and what a request that is not a multipart form pays for it.

    .venv/bin/python benchmarks/form_scan.py [--mib 10]

A body of `--mib` MiB (a `model` part, then a file) is fed to `PartScanner` as the data
plane reads it (64 KiB pieces), and whole (a body held in memory, `formscan.scan_held`),
for a file of random bytes and one of near-delimiters ("\\r\\n--XyY\\r\\n--Xy" over and over, the
worst case for the search). A request that is not multipart pays one check per streamed
body (`slowpath._chain`: `field is None`), a JSON body routed by its `model` one check
(`modelpeek._peeked`), a request routed without its body nothing: timed too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.dataplane.formscan import PartScanner
from gateway.dataplane.jsonpeek import ModelField

_MODEL = b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
_FILE = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'


def _body(mib: int, near: bool) -> bytes:
    size = mib << 20
    if near:
        data = (b"\r\n--XyY\r\n--Xy" * (size // 14 + 1))[:size]
    else:
        data = os.urandom(size).replace(b"--XyZ", b"--XyY")
    return _MODEL + _FILE + data + b"\r\n--XyZ--\r\n"


def _scan(body: bytes, piece: int) -> float:
    best = float("inf")
    for _ in range(5):
        scan = PartScanner(b"XyZ")
        t = time.perf_counter()
        for i in range(0, len(body), piece):
            scan.feed(body[i:i + piece])
        best = min(best, time.perf_counter() - t)
        assert scan.done
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=10)
    args = ap.parse_args()
    for near in (False, True):
        body = _body(args.mib, near)
        copy = _scan(body, 64 << 10) - min(  # (the slicing into pieces is the reader's)
            timeit.repeat(lambda b=body: [b[i:i + 65536] for i in range(0, len(b), 65536)],
                          number=1, repeat=5))
        whole = _scan(body, len(body))
        mb = len(body) / 1e6
        print(f"{'near-delimiters' if near else 'random bytes':16}: 64 KiB pieces "
              f"{mb / copy:8.0f} MB/s, whole {mb / whole:8.0f} MB/s "
              f"({whole * 1e3:.2f} ms for {args.mib} MiB held)")
    n = 2_000_000
    empty = min(timeit.repeat(lambda: None, number=n, repeat=5)) / n * 1e9
    ns = min(timeit.repeat(lambda f=None: f is None, number=n, repeat=5)) / n * 1e9
    print(f"a body that is not a multipart form: {ns - empty:.1f} ns per streamed body "
          "(slowpath._chain: one check)")
    json_field = ModelField("gpt-a", 10, 17)  # (modelpeek._peeked's check, as it is written)
    ns = min(timeit.repeat(lambda f=json_field, c=True, p=b"x" * 100, k=65536: (
        f is not None and f.form and c and len(p) > k), number=n, repeat=5)) / n * 1e9
    print(f"a JSON body routed by its model: {ns - empty:.1f} ns (modelpeek._peeked: one "
          "check); a request routed without its body: no added work")


if __name__ == "__main__":
    main()
