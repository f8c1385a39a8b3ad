"""A progressive rollout's steps as routing reads them: the canary of a route, whether
the file lets it be rolled out, whether a recorded rollout is the one of the version the
file has now, which step it is at (the file's steps may have changed under it), the
weights it gives, and the kill that holds it.

Pure: no I/O; imports the config schema and the state document only. The routing
snapshot's build (domain/tablebuild.py) and the rollout drivers (control/rollout.py,
control/progressive.py) read the same rules from here.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config import RouteConfig
from gateway.domain.statedoc import StateDoc, kill_key

__all__ = ["canary_of", "kill_holding", "progressive_pct", "progressive_weights", "rolling",
           "rolls_out", "step_index"]


def canary_of(rc: RouteConfig, stable: str) -> str | None:
    """The canary of a two-version route (the version that is not `stable`)."""
    others = [v.name for v in rc.versions if v.name != stable]
    return others[0] if len(others) == 1 else None


def rolls_out(rc: RouteConfig, canary: str) -> bool:
    """Whether progressive delivery may move traffic onto `canary`: a version the file
    gives a weight, or the route's shadow (weight 0 by rule; its own gate decides). Any
    other at 0 is the old stable kept as the rollback target after a promotion committed to
    the file, or a dark launch; setting a canary to 0 stops its rollout."""
    v = rc.version(canary)
    shadow = rc.shadow is not None and rc.shadow.version == canary
    return v is not None and (v.weight > 0 or shadow)


def rolling(rc: RouteConfig, canary: str, prog: Mapping[str, object] | None) -> bool:
    """Whether `prog` is the rollout of `canary` as the config has it now: the same name,
    and (when the record has them) the same url and artifact. A new deployment under the
    name (a new build the file points to, generic names such as `canary` reused) is a new
    rollout from the first step, as Argo Rollouts restarts on a new revision: taken for the
    old one, it got the step reached (or, once that rollout was done, the file's weight,
    never stepped) at once, unjudged."""
    if prog is None or prog.get("canary") != canary:
        return False
    v = rc.version(canary)
    return "url" not in prog or (v is not None and prog.get("url") == v.url
                                 and prog.get("artifact") == v.artifact)


def kill_holding(doc: StateDoc, route: str, versions: tuple[str, ...]) -> str | None:
    """The kill that holds a progressive rollout of `route` between `versions` (none is
    stepped up or promoted while one stands), if any."""
    if "global" in doc.kills:
        return "global"
    if kill_key("route", route) in doc.kills:
        return "route"
    for v in versions:
        if kill_key("version", route, v) in doc.kills:
            return f"version:{v}"
    return None


def step_index(prog: Mapping[str, object], steps: list[float]) -> int | None:
    """The index into `steps` (the file's, non-empty) a rollout in `prog` is at (None: the
    document is corrupt). A rollout records the steps it was planned with: when a reload
    changed them, its index would mean another weight (at 5 % of [1, 5, 50, 100], index 1
    of [5, 50, 100] is 50 %), so it goes on from the largest new step not above the weight
    it was at (the first, if none is), and is never raised by the edit itself."""
    step = prog.get("step", 0)
    if type(step) is not int:  # not a bool either
        return None
    planned = prog.get("steps")
    if isinstance(planned, list) and planned and planned != steps \
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in planned):
        pct = float(planned[max(0, min(step, len(planned) - 1))])
        below = [i for i, x in enumerate(steps) if x <= pct]
        return below[-1] if below else 0
    return max(0, min(step, len(steps) - 1))


def progressive_pct(prog: Mapping[str, object]) -> float:
    """The canary's percentage by the steps `prog` recorded (-1: none recorded, or corrupt)."""
    planned, step = prog.get("steps"), prog.get("step", 0)
    if not isinstance(planned, list) or not planned or type(step) is not int:
        return -1.0
    x = planned[max(0, min(step, len(planned) - 1))]
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else -1.0


def progressive_weights(rc: RouteConfig,
                        prog: Mapping[str, object] | None) -> dict[str, float] | None:
    """Weights while a progressive rollout runs (step percentage to the canary). A canary
    the file gives weight 0 is not rolled out: the file's weights govern. A canary whose
    rollout has not started yet (a reload put it in; the route's next analysis round
    starts it, up to `analysis.interval` later) is at the first step already: the file's
    weight would give an unjudged version more, and the start would then move its users
    back off it. A shadow waits for its gate (control/shadow.py) at the file's 0."""
    steps = rc.analysis.steps if rc.analysis is not None else None
    canary = canary_of(rc, rc.stable)
    if not steps or canary is None or not rolls_out(rc, canary):
        return None
    if not rolling(rc, canary, prog):
        if rc.shadow is not None and rc.shadow.version == canary:
            return None
        pct = float(steps[0])
    else:
        assert prog is not None
        if prog.get("state") not in ("running", "paused"):
            return None
        step = step_index(prog, steps)
        if step is None:
            return None
        pct = float(steps[step])
    weights = {v.name: 0.0 for v in rc.versions}
    weights[canary] = pct
    weights[rc.stable] = 100.0 - pct
    return weights
