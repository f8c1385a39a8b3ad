"""Shadow results: the counts of one shadow, their fleet merge and the report.

Owns `Tally` (one process's counts for one route's shadow: what happened to the copies,
comparison outcomes, kinds of difference, both sides' latency histograms, the noise
floor's pairs and paths, and a bounded ring of sampled disagreements with redacted
bodies), its JSON form for the state store, and `compared_agreed`; the fleet's merge and the
report are shadowreport.py's, the gate the counts feed is promotiongate.py's. Pure: time
is passed in.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gateway.config_shadow import DisagreementsConfig, NoiseConfig
from gateway.domain.analysis import LATENCY_BOUNDS_MS
from gateway.domain.compare import AGREED, DISAGREED, NOISE
from gateway.domain.comparison import MAX_PATH, Comparison, Difference
from gateway.domain.disagreements import Record, kept_by

__all__ = ["COPY_RESULTS", "Tally", "compared_agreed"]

#: what happened to a copy that was not compared: sent (then compared or failed),
#: dropped (max_inflight), body (request too large), answer (answer too large),
#: down (the shadow killed or unhealthy), failed (no answer from the shadow),
#: not_compared (another version than the route's stable answered the client: no copy)
COPY_RESULTS = ("sent", "dropped", "body", "answer", "down", "failed", "not_compared")
MAX_NOISE_PATHS = 256
_BOUNDS = tuple(float(b) for b in LATENCY_BOUNDS_MS)


def _hist() -> list[int]:
    return [0] * (len(_BOUNDS) + 1)


@dataclass
class Tally:
    version: str
    spec: str  # digest of the shadow's settings: counts of other settings are not merged
    copies: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    differences: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    primary_ms: list[int] = field(default_factory=_hist)
    shadow_ms: list[int] = field(default_factory=_hist)
    primary_s: float = 0.0  # the sums of both sides' latencies (seconds)
    shadow_s: float = 0.0
    noise_pairs: int = 0
    noise_paths: dict[str, int] = field(default_factory=dict)
    raw_n: int = 0  # compared answers counted in raw_paths (only with a noise floor)
    raw_paths: dict[str, int] = field(default_factory=dict)  # where shadow and primary differed
    length_change: float = 0.0  # the sum of |relative change| of compared text answers
    length_n: int = 0
    disagreements: deque[Record] = field(default_factory=deque)
    keep: int = 20
    changes: int = 0  # bumped by every record: publish only what changed
    #: what the kept records' bodies were made under (`kept_by`: redaction, max_body)
    kept_under: tuple[Any, ...] | None = None
    #: the outcomes and failures of the copies of requests the primary answered 2xx: what
    #: the promotion gate counts (a 401 both sides gave says nothing of the model)
    ok_outcomes: dict[str, int] = field(default_factory=dict)
    ok_failures: dict[str, int] = field(default_factory=dict)
    #: comparisons counted by instances of an older version (their counts have no
    #: `ok_outcomes`): the gate leaves them out, not knowing the primary's status (not sent)
    older: int = 0
    #: `noise` outcomes that excused the answer itself (compare.ANSWER_KINDS): of all, and
    #: of requests the primary answered 2xx (the gate counts these as no comparison)
    excused: int = 0
    ok_excused: int = 0

    # ------------------------------------------------------------------ recording

    def copy(self, result: str, n: int = 1) -> None:
        self.copies[result] = self.copies.get(result, 0) + n
        self.changes += 1

    def failed(self, kind: str, primary_ok: bool = True) -> None:
        """A copy that got no answer; `primary_ok`: the primary answered the request 2xx."""
        self.copy("failed")
        self.failures[kind] = self.failures.get(kind, 0) + 1
        if primary_ok:
            self.ok_failures[kind] = self.ok_failures.get(kind, 0) + 1

    def noise(self, c: Comparison) -> None:
        """A pair of the primary's own answers was compared."""
        if not c.comparable:
            return
        self.noise_pairs += 1
        _count_paths(self.noise_paths, c)
        self.changes += 1

    def observed(self, c: Comparison) -> None:
        """The shadow's answer was compared: where it differed, before the noise floor."""
        if not c.comparable:
            return
        self.raw_n += 1
        _count_paths(self.raw_paths, c)

    def noisy_paths(self, cfg: NoiseConfig | None) -> frozenset[str]:
        """Paths that are noise for every request, not just those with a noise pair of their
        own (Diffy's rule): the primary differs from itself there in at least `threshold`
        of the pairs, and the shadow differs from it there not much more often (at most
        `relative` more). A path the primary is sometimes unsure of, where the shadow
        differs far more often, stays a real difference."""
        if cfg is None or self.noise_pairs < cfg.min_pairs:
            return frozenset()
        out = []
        untracked = len(self.raw_paths) >= MAX_NOISE_PATHS  # a path not in it: rate unknown
        for path, n in self.noise_paths.items():
            rate = n / self.noise_pairs
            if rate < cfg.threshold or (untracked and path not in self.raw_paths):
                continue  # (how often the shadow differs there is not known: not excused)
            raw = self.raw_paths.get(path, 0) / self.raw_n if self.raw_n else 0.0
            if raw <= rate * (1 + cfg.relative):
                out.append(path)
        return frozenset(out)

    def outcome(self, outcome: str, differences: tuple[Difference, ...], primary_s: float,
                shadow_s: float, detail: dict[str, Any], primary_ok: bool = True,
                excused: bool = False) -> None:
        """A compared copy; `primary_ok`: the primary answered the request 2xx; `excused`:
        a `noise` outcome that excused the answer itself."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.excused += excused
        if primary_ok:
            self.ok_outcomes[outcome] = self.ok_outcomes.get(outcome, 0) + 1
            self.ok_excused += excused
        for kind in {d.kind for d in differences}:
            self.differences[kind] = self.differences.get(kind, 0) + 1
        self.primary_ms[bisect_left(_BOUNDS, primary_s * 1000.0)] += 1
        self.shadow_ms[bisect_left(_BOUNDS, shadow_s * 1000.0)] += 1
        self.primary_s += primary_s
        self.shadow_s += shadow_s
        change = detail.get("length_change")
        if isinstance(change, float | int):
            self.length_change += abs(change)
            self.length_n += 1
        self.changes += 1

    def keep_for(self, cfg: DisagreementsConfig) -> None:
        """Keep records as `cfg` says: those made under other redaction (or max_body) are
        dropped now (a reload adding a redact path must not leave the bodies it hides in
        the report), and the ring is cut to `keep`."""
        under = kept_by(cfg)
        if under != self.kept_under:
            if self.kept_under is not None and self.disagreements:
                self.disagreements.clear()
                self.changes += 1
            self.kept_under = under
        self.keep = cfg.keep
        while len(self.disagreements) > max(self.keep, 0):
            self.disagreements.popleft()
            self.changes += 1

    def disagreement(self, record: Record, cfg: DisagreementsConfig | None = None) -> None:
        """`cfg`: the settings the record was made under (one made under others, by a copy
        routed before a reload, is not kept)."""
        if self.keep <= 0 or (cfg is not None and self.kept_under is not None
                              and kept_by(cfg) != self.kept_under):
            return
        self.disagreements.append(record)
        while len(self.disagreements) > self.keep:
            self.disagreements.popleft()
        self.changes += 1

    # ------------------------------------------------------------------ the store's form

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "spec": self.spec, "copies": self.copies,
                "outcomes": self.outcomes, "differences": self.differences,
                "failures": self.failures, "primary_ms": self.primary_ms,
                "shadow_ms": self.shadow_ms, "primary_s": self.primary_s,
                "shadow_s": self.shadow_s, "noise_pairs": self.noise_pairs,
                "noise_paths": self.noise_paths, "raw_n": self.raw_n,
                "raw_paths": self.raw_paths, "length_change": self.length_change,
                "length_n": self.length_n, "ok_outcomes": self.ok_outcomes,
                "ok_failures": self.ok_failures, "excused": self.excused,
                "ok_excused": self.ok_excused,
                # (records as text under a key of their own: an instance of an older
                # version, which takes objects only under "disagreements", still reads
                # the counts)
                "disagreements": [r for r in self.disagreements if isinstance(r, dict)],
                "records": [r for r in self.disagreements if isinstance(r, str)]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Tally:
        """ValueError/TypeError/KeyError on a malformed blob (another instance's, or
        anyone who can write to the store)."""
        def counts(x: Any) -> dict[str, int]:
            if not isinstance(x, dict):
                raise TypeError("counts must be an object")
            return {str(k)[:MAX_PATH]: int(v) for k, v in list(x.items())[:MAX_NOISE_PATHS]}

        def hist(x: Any) -> list[int]:
            h = [int(v) for v in x]
            if len(h) != len(_BOUNDS) + 1:
                raise ValueError("histogram has the wrong number of buckets")
            return h

        ds, texts = d.get("disagreements", []), d.get("records", [])
        if not isinstance(ds, list) or not all(isinstance(r, dict) for r in ds):
            raise TypeError("disagreements must be a list of objects")
        if not isinstance(texts, list) or not all(isinstance(r, str) for r in texts):
            raise TypeError("records must be a list of strings")
        return cls(str(d["version"]), str(d["spec"]), counts(d.get("copies", {})),
                   counts(d.get("outcomes", {})), counts(d.get("differences", {})),
                   counts(d.get("failures", {})), hist(d["primary_ms"]), hist(d["shadow_ms"]),
                   float(d.get("primary_s", 0.0)), float(d.get("shadow_s", 0.0)),
                   int(d.get("noise_pairs", 0)), counts(d.get("noise_paths", {})),
                   int(d.get("raw_n", 0)), counts(d.get("raw_paths", {})),
                   float(d.get("length_change", 0.0)), int(d.get("length_n", 0)),
                   deque([*ds, *texts][-1000:]), keep=1000,
                   # (an older instance's counts have none: its comparisons do not count
                   # for the gate, which cannot tell which of them were of 2xx answers)
                   ok_outcomes=counts(d.get("ok_outcomes", {})),
                   ok_failures=counts(d.get("ok_failures", {})),
                   excused=int(d.get("excused", 0)), ok_excused=int(d.get("ok_excused", 0)),
                   older=0 if "ok_outcomes" in d else compared_agreed(
                       Tally("", "", outcomes=counts(d.get("outcomes", {}))))[0])


def _count_paths(counts: dict[str, int], c: Comparison) -> None:
    """Each path `c` differs at counted once, in at most MAX_NOISE_PATHS paths: one not
    counted yet once that many are is left out (`noisy_paths` reads a full `raw_paths` as
    "rate unknown" for it), so the noise pairs' and the shadow's counts are bounded alike."""
    for path in {d.path for d in c.differences}:
        if path in counts or len(counts) < MAX_NOISE_PATHS:
            counts[path] = counts.get(path, 0) + 1


def compared_agreed(t: Tally, ok_only: bool = False) -> tuple[int, int]:
    """(compared, agreed): a `noise` outcome counts as agreement; `uncomparable` is not
    counted either way. `ok_only`: of the requests the primary answered 2xx only."""
    o = t.ok_outcomes if ok_only else t.outcomes
    agreed = o.get(AGREED, 0) + o.get(NOISE, 0)
    return agreed + o.get(DISAGREED, 0), agreed
