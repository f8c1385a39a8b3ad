"""What the state records of the config files it has run, and a file's problems against it.

Pure: `record_config` registers unseen version identities (url, artifact) and the
config-driven stable changes in the history (once per stable and config digest, so
instances running different files during a rollout do not flap it); `identity_problems`
refuses a version whose artifact changed against the record (versions are immutable);
`latch_problems` refuses a file that drops a version a latched override serves. Each
problem is (yaml path, message).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config import RouteConfig
from gateway.domain.statedoc import Change, HistoryEntry, RouteOverride, StateDoc

__all__ = ["identity_problems", "latch_problems", "record_config"]


def record_config(doc: StateDoc, routes: list[RouteConfig], digest: str,
                  now: str) -> Change | None:
    """Register unseen version identities and config-driven stable changes.

    Returns None when there is nothing to record. A stable is recorded once per
    (stable, config digest), so instances running different files during a rollout do not
    flap the history.
    """
    identities: dict[str, dict[str, dict[str, Any]]] = {}
    history: dict[str, tuple[HistoryEntry, ...]] = {}
    for rc in routes:
        known = doc.identities.get(rc.name, {})
        for v in rc.versions:
            rec = known.get(v.name)
            if rec is None or (v.artifact and not rec.get("artifact")):
                identities.setdefault(rc.name, {})[v.name] = {
                    "url": v.url, "artifact": v.artifact, "time": now}
        entries = doc.history.get(rc.name, ())
        tag = f"config {digest[:19]}"
        if rc.name not in doc.overrides and not any(
                e.stable == rc.stable and e.reason == tag for e in entries):
            last = entries[-1] if entries else None
            if last is None or last.stable != rc.stable:
                sv = rc.version(rc.stable)
                assert sv is not None
                history[rc.name] = (HistoryEntry(rc.stable, now, "killgate/config", tag,
                                                 sv.url, sv.artifact),)
    if not identities and not history:
        return None
    return Change(history=history, identities=identities,
                  named=frozenset(rc.name for rc in routes),
                  serving=frozenset((rc.name, v.name) for rc in routes for v in rc.versions))


def identity_problems(doc: StateDoc, routes: list[RouteConfig]) -> list[tuple[str, str]]:
    """(yaml path, message) for every version whose artifact changed against the record."""
    out = []
    for i, rc in enumerate(routes):
        known = doc.identities.get(rc.name, {})
        for j, v in enumerate(rc.versions):
            rec = known.get(v.name)
            if rec and rec.get("artifact") and v.artifact and rec["artifact"] != v.artifact:
                out.append((f"routes[{i}].versions[{j}].artifact",
                            f"version {v.name!r} of route {rc.name!r} was recorded with "
                            f"{rec['artifact']}"
                            + (f" on {rec['time']}" if rec.get("time") else "")
                            + "; versions are immutable: give the new artifact a new "
                              "version name"))
    return out


def latch_problems(doc: StateDoc, routes: list[RouteConfig],
                   overrides: Mapping[str, RouteOverride] | None = None
                   ) -> list[tuple[str, str]]:
    """(yaml path, message) for every version a latched override serves (its stable, or a
    weight > 0) that the file no longer has: applied, such a file would move the route's
    traffic onto what the override took it off (every weight 0: the file's stable gets
    everything), and undo a rollback with no audit event saying so. `overrides`: those
    to check instead of `doc`'s (`killgate diff`, from the running gateway's status)."""
    out = []
    latched = doc.overrides if overrides is None else overrides
    for i, rc in enumerate(routes):
        ov = latched.get(rc.name)
        if ov is None:
            continue
        held = {n for n, w in ov.weights.items() if w > 0} | ({ov.stable} if ov.stable else set())
        for name in sorted(n for n in held if rc.version(n) is None):
            role = "stable" if name == ov.stable else f"weight {ov.weights.get(name, 0):g}"
            out.append((f"routes[{i}].versions",
                        f"version {name!r} of route {rc.name!r} is latched at runtime ({role}, "
                        f"{ov.kind} by {ov.actor}: {ov.reason!r}); a file without it would send "
                        "its traffic to other versions: keep it in the file, or run "
                        f"`killgate release {rc.name}` first"))
    return out
