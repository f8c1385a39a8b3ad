"""A drill's HTTP: its admin API calls and its synthetic traffic.

Owns the drill process's aiohttp client use (like events.py and probes.py, one of the few
modules allowed the client): `AdminClient` (writes carry an Idempotency-Key and are
retried with it; a redirect is never followed), `Traffic` (requests to every instance at
a steady rate, open loop: a slow answer never delays the next request; each one recorded
as an `Obs`). The abort watch on users' errors is in `drillabort`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.domain.drillplan import Plan
from gateway.domain.drillreport import Obs
from gateway.tokenhint import token_refused

__all__ = ["AdminClient", "DrillApiError", "Probe", "Traffic", "resolve_probe"]


MAX_ANSWER = 32 << 20  # the largest admin answer read (as the admin CLI's: cli/transport.py)


class DrillApiError(Exception):
    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(f"{status} {type_}: {message}" if status else message)
        self.status = status
        self.type = type_
        #: the drill an error names (a 503 not_durable open's: the drill it opened)
        self.drill: str | None = None


class AdminClient:
    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None,
                 timeout: float = 35.0) -> None:
        self.session = session
        self.base = base.rstrip("/")
        self.timeout = timeout  # (each try's, whole: --timeout, as the admin CLI's)
        self.headers = {"accept": "application/json", "user-agent": "killgate-drill"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"

    def at(self, base: str) -> AdminClient:
        """The same client (token, timeout, session) for the admin API at `base`."""
        other = AdminClient(self.session, base, None, self.timeout)
        other.headers = dict(self.headers)
        return other

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None,
                   retry_for: float = 0.0,
                   on_retry: Callable[[str], None] | None = None,
                   key: str | None = None,
                   unreachable_for: float | None = None) -> dict[str, Any]:
        """One API call; with `retry_for`, connection failures, 503s, 429s refused
        before the token was checked (after their Retry-After) and 409 in_progress are
        retried (same Idempotency-Key) for that long: a restore must get through a store outage.
        `on_retry` is told why, once, when the first retry is decided (an operator waiting
        on a restore must not stare at nothing for `retry_for`). `key`: the Idempotency-Key
        (default: a new one), for the same write sent again elsewhere; `unreachable_for`:
        a connection failure is retried this long only (another address may answer)."""
        told = on_retry is None
        headers = dict(self.headers)
        if body is not None:
            headers["idempotency-key"] = key or uuid.uuid4().hex
        start = time.monotonic()
        deadline = start + retry_for
        while True:
            pause = 0.2
            try:
                async with self.session.request(
                        method, self.base + path, json=body, headers=headers,
                        allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(total=self.timeout)) as r:
                    if 300 <= r.status < 400:  # never followed: it would carry the token
                        raise DrillApiError(r.status, "redirect", (
                            f"the admin API at {self.base} answered {r.status} to "
                            f"{r.headers.get('Location', '(no Location)')[:256]}: not followed "
                            "(it would carry the token there); give the admin URL itself"))
                    raw = bytearray()
                    async for chunk in r.content.iter_chunked(65536):
                        raw += chunk
                        if len(raw) > MAX_ANSWER:  # (a hostile endpoint's endless answer)
                            raise DrillApiError(r.status, "bad_answer", (
                                f"the admin API at {self.base} answered {r.status} with over "
                                f"{MAX_ANSWER >> 20} MiB: not read; is that killgate's admin "
                                "listener?"))
                    try:
                        data = json.loads(raw) if raw.strip() else None  # (as json() did)
                    except (ValueError, RecursionError):  # (an answer: not "unreachable")
                        raise DrillApiError(r.status, "bad_answer", (
                            f"the admin API at {self.base} answered {r.status} with something "
                            "that is not JSON: is that killgate's admin listener?")) from None
                    if r.status < 300 and isinstance(data, dict):
                        return data
                    err = data.get("error") if isinstance(data, dict) else None
                    if not isinstance(err, dict) or not isinstance(err.get("type"), str):
                        # (a 503 of this kind, a proxy's, is retried as before)
                        exc = DrillApiError(r.status, "bad_answer", (
                            f"the admin API at {self.base} answered {r.status} without a "
                            "killgate error: is that killgate's admin listener?"))
                    else:
                        message = str(err.get("message", data))
                        if err["type"] == "no_route" or "x-killgate-route" in r.headers:
                            message += (f" (what answered at {self.base} is a killgate data "
                                        "plane, not its admin API: give --admin (or "
                                        "$KILLGATE_ADMIN_URL) the admin listener's URL, "
                                        "`admin.listen` in the config)")
                        if r.status == 401:  # (as the admin CLI says it: cli/http.py)
                            message += token_refused(err["type"], "authorization" in headers)
                        exc = DrillApiError(r.status, err["type"], message)
                        if isinstance(named := err.get("drill"), str):
                            exc.drill = named
                        if r.status == 429 and err["type"] == "too_many_attempts":
                            # refused before its token was checked (a flood of new tokens;
                            # a worker that has not seen this one): nothing was done by it,
                            # waited out as the admin CLI does (cli/http.py)
                            after = r.headers.get("Retry-After", "").strip()
                            pause = (float(after) if after.isdigit() and 1 <= int(after) <= 30
                                     else 1.0)
            except (aiohttp.ClientError, TimeoutError) as e:
                exc = DrillApiError(0, "unreachable",
                                    f"cannot reach the admin API at {self.base}: {_why(e)}")
            unchecked = exc.status == 429 and exc.type == "too_many_attempts"
            # 409 in_progress: an earlier try of this call (its answer lost to a timeout)
            # is still being applied, or failed and let the key go: tried again with the
            # same key, it gets that try's answer or runs afresh (a drill's restore gave up
            # here under load, leaving its kill in force: seen in CI)
            busy = exc.status == 409 and exc.type == "in_progress"
            if ((exc.status not in (0, 503) and not unchecked and not busy)
                    or time.monotonic() + (pause if unchecked else 0) > deadline
                    or (exc.status == 0 and unreachable_for is not None
                        and time.monotonic() + pause > start + unreachable_for)):
                raise exc
            if not told and on_retry is not None:
                told = True
                on_retry(f"{exc}: trying again for up to {retry_for:g}s")
            await asyncio.sleep(pause)


def _why(exc: BaseException) -> str:
    """What went wrong with a connection, as a person reads it (`[Errno 111] Connection
    refused`), never an object's repr."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        if isinstance(err, ssl.SSLError):  # (its errno is OpenSSL's, not the system's)
            if err.reason == "WRONG_VERSION_NUMBER":
                return ("WRONG_VERSION_NUMBER: what answers there does not speak TLS: "
                        "killgate's admin listener serves plain HTTP, so give an http:// URL")
            return str(err.reason or err)  # (a name that does not resolve: a gaierror, errno < 0)
        if err.errno and err.errno > 0:
            return f"[Errno {err.errno}] {os.strerror(err.errno)}"
        return err.strerror or str(err)
    return str(exc) or type(exc).__name__


@dataclass(frozen=True, slots=True)
class Probe:
    """The synthetic request, resolved against the route's config."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


class Traffic:
    """Requests to every instance at `rate` per second each, until stopped."""

    def __init__(self, session: aiohttp.ClientSession, instances: list[str], probe: Probe,
                 rate: float, t0: float, timeout: float = 5.0, max_inflight: int = 256) -> None:
        self.session = session
        self.instances = instances
        self.probe = probe
        self.period = 1.0 / rate
        self.t0 = t0
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_inflight = max_inflight
        self.extra: dict[str, str] = {}  # headers added later (none today)
        self.obs: list[Obs] = []
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def run(self) -> None:
        await asyncio.gather(*(self._pace(i) for i in self.instances))

    def stop(self) -> None:
        self._stop.set()

    async def drain(self, timeout: float = 6.0) -> None:
        """Stop, and wait for the requests in flight (they are part of the record)."""
        self._stop.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for t in list(self._tasks):
            t.cancel()

    async def _pace(self, instance: str) -> None:
        nxt = time.monotonic()
        inflight: set[asyncio.Task[None]] = set()
        while not self._stop.is_set():
            if len(inflight) >= self.max_inflight:  # the instance stopped answering
                self.obs.append(Obs(instance, self.now(), self.now(), 0, None, "client_full"))
            else:
                t = asyncio.create_task(self._one(instance))
                for s in (inflight, self._tasks):
                    s.add(t)
                    t.add_done_callback(s.discard)
            nxt += self.period
            if nxt < time.monotonic() - 2 * self.period:
                nxt = time.monotonic()  # this process stalled: go on, do not send a burst
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, nxt - time.monotonic()))

    async def _one(self, instance: str) -> None:
        p = self.probe
        sent = self.now()
        try:
            async with self.session.request(p.method, instance + p.path, data=p.body,
                                            headers={**p.headers, **self.extra},
                                            timeout=self.timeout) as r:
                await r.read()
                self.obs.append(Obs(instance, sent, self.now(), r.status,
                                    r.headers.get("x-killgate-version"),
                                    r.headers.get("x-killgate-decision"),
                                    r.headers.get("x-killgate-route")))
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.obs.append(Obs(instance, sent, self.now(), 0, None, None))


def resolve_probe(plan: Plan, match: dict[str, Any], pin: bool) -> Probe:
    """The synthetic request: the plan's, else what the route matches on."""
    req = plan.request
    headers = dict(match.get("header") or {})
    if match.get("host"):
        headers["host"] = match["host"]
    headers.update(req.headers)
    body = req.body.encode() if req.body is not None else None
    method = req.method
    if body is None and match.get("model"):
        method = "POST"
        body = json.dumps({"model": match["model"]}).encode()
        headers.setdefault("content-type", "application/json")
    if pin and plan.version:
        headers["x-killgate-pin"] = plan.version
    return Probe(method, req.path or match.get("path_prefix") or "/", headers, body)
