"""What a bad admin token costs to refuse (RELIABILITY row 43: CPU per bad token).

    .venv/bin/python benchmarks/auth_cost.py [--runs 2000]

Runs killgate's `Authenticator` (HS256, as configured by default) in this process on each
kind of token, valid and bad, and prints the median and p99 CPU time per check, side by
side with a valid token's first (uncached) check. A bad token must never cost much more
than a good one: the Authorization header is capped at 8 KiB before anything is decoded,
so a 1 MB token or a 100,000-deep header costs a length check, and a refused signature
costs one HMAC.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt

from gateway.admin.auth import Authenticator
from gateway.config import AuthConfig
from gateway.errors import ApiError

SECRET = secrets.token_urlsafe(48)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**over: object) -> dict[str, object]:
    now = int(time.time())
    c: dict[str, object] = {"sub": "ops", "scope": "killgate:admin", "iat": now,
                            "exp": now + 600, "iss": "killgate", "aud": "killgate-admin",
                            "jti": uuid.uuid4().hex}
    c.update(over)
    return c


def kinds() -> dict[str, Callable[[], str]]:
    """Each kind makes a fresh token per call (a verified token is cached: only the first
    check of a token pays for its signature)."""
    other = secrets.token_urlsafe(48)
    body = _b64(json.dumps(claims()).encode())
    none = _b64(b'{"alg":"none"}')
    deep = _b64(b"[" * 100_000 + b"]" * 100_000)
    deep_under_cap = _b64(b"[" * 2_900 + b"]" * 2_900)  # ~7.7 KiB: under the 8 KiB cap
    x5c = {"x5c": ["MIIC" + "A" * 2000, "MIID" + "B" * 1500]}  # a certificate chain
    return {
        "valid, first check": lambda: jwt.encode(claims(), SECRET, algorithm="HS256"),
        "wrong key": lambda: jwt.encode(claims(), other, algorithm="HS256"),
        "expired": lambda: jwt.encode(claims(iat=1, exp=2), SECRET, algorithm="HS256"),
        "alg none": lambda: f"{none}.{body}.",
        "garbage": lambda: "not-a-token-" + uuid.uuid4().hex,
        "8 KiB of garbage, under the cap": lambda: "a" * (8 * 1024 - 10),
        "1 MB token": lambda: "a" * (1 << 20),
        "100,000-deep header": lambda: f"{deep}.{body}.x",
        "2,900-deep header, under the cap": lambda: f"{deep_under_cap}.x.x",
        "valid, 3.5 KB header (x5c chain)": lambda: jwt.encode(claims(), SECRET,
                                                              algorithm="HS256", headers=x5c),
    }


async def measure(auth: Authenticator, make: Callable[[], str], runs: int) -> tuple[float, float,
                                                                                     str]:
    tokens = [make() for _ in range(runs)]
    times: list[float] = []
    outcome = ""
    for tok in tokens:
        header = f"Bearer {tok}"
        t0 = time.process_time_ns()
        try:
            await auth.authenticate(header)
            outcome = "accepted"
        except ApiError as exc:
            outcome = f"{exc.status} {exc.type}"
        times.append((time.process_time_ns() - t0) / 1000)
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))], outcome


async def main_async(runs: int) -> None:
    os.environ["KILLGATE_JWT_SECRET"] = SECRET
    auth = Authenticator(AuthConfig(), Path)
    print(f"\n{runs} checks per kind, CPU time per check (this process, one core)\n")
    print("| token | median µs | p99 µs | answer |")
    print("|---|---|---|---|")
    for name, make in kinds().items():
        median, p99, outcome = await measure(auth, make, runs)
        print(f"| {name} | {median:.1f} | {p99:.1f} | {outcome} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2000)
    asyncio.run(main_async(ap.parse_args().runs))


if __name__ == "__main__":
    main()
