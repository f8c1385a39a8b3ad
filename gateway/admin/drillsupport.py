"""What the drill endpoints need besides handlers: the drill key, the drill metrics, the
recorded summary's hygiene, and past drills read back from the audit trail.

Owns reading the drill key (a secret: never logged or returned), the `killgate_drill*`
gauges (computed from the replicated state at scrape time), and the bounded scans of the
audit trail that `GET /v1/drills` and a restore without a drill record use.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from gateway import filemodes
from gateway.admin.ports import AuditReader
from gateway.configfile import LoadedConfig
from gateway.domain.audit import clean_text, genuine
from gateway.domain.auditpin import AnchoredLinks, ChainFromNewest
from gateway.domain.drillresults import is_number
from gateway.domain.drilltoken import derive_key
from gateway.domain.statedoc import StateDoc
from gateway.errors import ApiError
from gateway.telemetry.metrics import Metrics

__all__ = ["HISTORY_SCAN", "MAX_SUMMARY", "VERDICTS", "DrillHistory", "clean_summary",
           "drill_events", "end_input", "export_metrics", "load_drill_key"]

HISTORY_SCAN = 5000  # audit events read (newest first) to find past drills


def load_drill_key(loaded: LoadedConfig) -> tuple[bytes | None, str | None]:
    """The drill token key, and why there is none. A dedicated key (drills.key_file or
    drills.key_env, >= 32 bytes) wins; else it is derived from the admin HS256 secret.
    Either way the key used is derived (one-way) from the secret, never the secret. A key
    file others may read or write is refused, like the admin's (gateway/filemodes.py)."""
    cfg = loaded.config.drills
    try:
        if cfg.key_file:
            path = loaded.resolve(cfg.key_file)
            if (loose := filemodes.problem(path, secret=True)) is not None:
                return None, f"the drill key file is refused: {loose}"
            raw = filemodes.read_key_file(path).strip()
        elif cfg.key_env and os.environ.get(cfg.key_env):
            raw = filemodes.key_env(cfg.key_env).encode()
        else:
            auth = loaded.config.admin.auth
            if auth.hs256_secret_file:
                raw = filemodes.read_key_file(loaded.resolve(auth.hs256_secret_file)).strip()
            elif any(a.startswith("HS") for a in auth.algorithms):
                raw = filemodes.key_env(auth.secret_env).encode()
            else:
                raw = b""
    except OSError as exc:
        return None, f"the drill key cannot be read ({exc.strerror})"
    except ValueError as exc:
        return None, f"the drill key cannot be read ({exc})"
    if len(raw) < 32:
        return None, ("no drill key: set drills.key_env (or drills.key_file) to a secret of "
                      ">= 32 bytes shared by every instance")
    return derive_key(raw), None


LAST = ("killgate_drill_last_passed", "killgate_drill_last_timestamp_seconds",
        "killgate_drill_last_duration_seconds", "killgate_drill_last_leaks",
        "killgate_drill_last_errors", "killgate_drill_last_seconds")


def export_metrics(metrics: Metrics, doc: StateDoc) -> None:
    """The drill gauges, from the replicated state (every instance exports the same)."""
    now = time.time()
    metrics.set("killgate_drills_open", len(doc.drills))
    metrics.set("killgate_drills_overdue", sum(now > d.deadline for d in doc.drills.values()))
    names = ("kind", "route")
    for name in LAST:  # set afresh: a value the last result lacks is not an old one's
        metrics.clear(name)
    for res in doc.drill_results.values():
        labels = (str(res.get("kind")), str(res.get("route")))
        summary = res.get("summary") or {}
        metrics.set("killgate_drill_last_passed", 1 if res.get("verdict") == "passed" else 0,
                    labels, names)
        metrics.set("killgate_drill_last_timestamp_seconds", float(res.get("time") or 0),
                    labels, names)
        if is_number(res.get("duration_s")):
            metrics.set("killgate_drill_last_duration_seconds", res["duration_s"], labels,
                        names)
        for field in ("leaks", "errors"):
            if is_number(summary.get(field)):
                metrics.set(f"killgate_drill_last_{field}", summary[field], labels, names)
        for measure in ("time_to_kill_ms", "time_to_failover_ms", "time_to_rollback_ms",
                        "time_to_restore_ms"):
            m = summary.get(measure)
            value = m.get("max") if isinstance(m, dict) else m
            if is_number(value):
                metrics.set("killgate_drill_last_seconds", value / 1000.0,
                            (*labels, measure[:-3]), (*names, "measure"))


_MAX_INT = 2 ** 63


VERDICTS = ("passed", "failed", "aborted", "skipped")
MAX_SUMMARY = 16 * 1024


def end_input(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """An end's `verdict` and its `summary` as recorded (`clean_summary`); 400 for others."""
    verdict = body.get("verdict")
    if verdict not in VERDICTS:
        raise ApiError(400, "bad_request", f"'verdict' must be one of {', '.join(VERDICTS)}")
    summary = body.get("summary", {})
    if not isinstance(summary, dict):
        raise ApiError(400, "bad_request", "'summary' must be an object")
    summary = clean_summary(summary)
    if len(json.dumps(summary)) > MAX_SUMMARY:
        raise ApiError(400, "bad_request", f"'summary' is larger than {MAX_SUMMARY} bytes")
    return str(verdict), summary


def clean_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary as recorded: strings are escaped (one audit event is one line); numbers
    must be finite (the state and the audit trail are strict JSON) and within 2**63 (the
    metrics read them as floats); at most 6 levels deep."""
    def walk(v: Any, depth: int) -> Any:
        if depth > 6:
            raise ApiError(400, "bad_request", "'summary' is nested more than 6 levels deep")
        if isinstance(v, str):
            return clean_text(v, 1024)
        if isinstance(v, float) and not math.isfinite(v):
            raise ApiError(400, "bad_request", "'summary' holds a number that is not finite")
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > _MAX_INT:
            # (JSON has integers of any length; the gauges every instance exports from
            # the kept numbers are floats, and float() of this one overflows)
            raise ApiError(400, "bad_request", "'summary' holds an integer beyond 2**63")
        if isinstance(v, dict):
            return {clean_text(str(k), 128): walk(x, depth + 1) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, depth + 1) for x in v]
        return v

    out: dict[str, Any] = walk(summary, 0)
    return out


async def drill_events(store: AuditReader, want: Any, limit: int,
                       known: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Audit events for which `want(event)` holds, newest first: at most `limit`, from at
    most HISTORY_SCAN of the newest events. With audit keys, only events whose hash and MAC
    verify: whoever can write to the store could add a "drill" that "made" an operator's
    kill, for a restore from the trail to lift, or a drill history of its own. An event
    MAC'd under a key a rotation removed is kept when the chain authenticates it (every
    event from a newer genuine one back to it links and recomputes; auditpin.py), marked
    `"verified_by": "chain"`: before, the drills from before a rotation were dropped.
    And only events of this deployment's chain, back from the head its signed state
    document anchors (`AnchoredLinks`): an event's MAC does not name the redis prefix, so
    another deployment's genuine events (sharing the key, as the README allows with
    another prefix), copied into this stream, verified, and its drills were listed and
    restored here (review revprefix). `known`: the links a walk verified before
    (`AnchoredLinks`), kept by a caller that reads again."""
    keys = store.audit_keys
    ring = keys.keys() if keys.enabled else None
    chain = ChainFromNewest(ring) if ring is not None else None
    out: list[dict[str, Any]] = []
    head, events, before = await store.audit_newest(500)
    anchored = AnchoredLinks(head, known)
    scanned = 0
    while True:
        scanned += len(events)
        if chain is None:
            out.extend(e for e in events if want(e))
        else:
            base = len(chain.seen)
            chain.feed(events)
            for i, (e, link) in enumerate(zip(events, anchored.links(events), strict=True)):
                if not link or not want(e):
                    continue
                if genuine(e, chain.keys):
                    out.append(e)
                elif chain.by_chain(base + i):  # (walked only when one is not genuine)
                    out.append({**e, "verified_by": "chain"})
        if len(out) >= limit or scanned >= HISTORY_SCAN or before is None or not events:
            break
        events, before = await store.audit_page(500, before)
    return out[:limit]


class DrillHistory:
    """GET /v1/drills's past drills (`drill.end` events), read again only when the trail
    has a newer event than at the last read. The console asks every 3 s in every open tab;
    with fewer drills than asked for among the newest HISTORY_SCAN events (weekly drills),
    each ask read and parsed all of them: ~0.1 s on the loop the data plane runs on."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._got: list[dict[str, Any]] = []
        #: the trail's links verified by the reads before (auditpin.AnchoredLinks): a read
        #: after a new event hashes that one only, not the HISTORY_SCAN before it again
        self._known: dict[str, str] = {}

    async def get(self, store: AuditReader, limit: int) -> list[dict[str, Any]]:
        newest, _ = await store.audit_page(1, None)
        head = (newest[0].get("id"), newest[0].get("hash")) if newest else None
        key = (head, limit, store.audit_keys.enabled)
        if key != self._key:
            if len(self._known) > 2 * HISTORY_SCAN:  # (bounded: read whole again once)
                self._known.clear()
            self._got = await drill_events(store, lambda e: e.get("action") == "drill.end",
                                           limit, self._known)
            self._key = key
        return list(self._got)
