"""What an Idempotency-Key's record names of the attempts whose commit answers were lost
(503 `outcome_unknown`, admin/writes.py): the newest attempt's write id and generation
(`unknown.write`, `unknown.generation`) and the earlier ones' (`unknown.before`, newest
first). Any of them may land late, the same partition holding their commits: a retry
asks the store about each, and its own write is fenced by them all. Pure.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_ATTEMPTS", "attempts", "landed_record", "no_event", "unconfirmed_record",
           "unknown_record"]

#: the attempts (write ids) a key names after outcome_unknown answers: the newest
MAX_ATTEMPTS = 8


def attempts(record: dict[str, Any]) -> list[tuple[str, int]]:
    """The write ids (and generations) of the attempts a key's `unknown` names, newest
    first; [] when it names none (not what admin/writes.py writes)."""
    try:
        unknown = record["unknown"]
        out = [(str(unknown["write"]), int(unknown["generation"]))]
        out += [(str(w), int(g)) for w, g in unknown.get("before", [])[:MAX_ATTEMPTS - 1]]
    except (KeyError, TypeError, ValueError, AttributeError):
        return []
    return out


def landed_record(earlier: dict[str, Any], generation: int) -> dict[str, Any]:
    """The answer's record of an attempt found to have landed (at `generation`)."""
    record = {k: v for k, v in earlier.items() if k not in ("unknown", "receipt", "late")}
    # (`late`: what a version before counted break-glass by; now admin/breakglass.py's)
    # (`receipt` false: an answer that names no generation to wait for, as first made)
    record["generation"] = generation if earlier.get("receipt", True) else None
    return record


def unknown_record(fingerprint: str, holder: str, write: str, generation: int,
                   tried: list[tuple[str, int]], status: int, body: dict[str, Any],
                   receipt: bool, scope: str | None = None) -> dict[str, Any]:
    """A key's record after an attempt's lost answer: the attempt's write id and
    generation, the earlier attempts' (`tried`, newest first), and the answer it made.
    `receipt` False: an answer that names no generation to wait for (an approval's step
    short of the last), answered as made should it have landed; `scope`: the scope its
    replay needs (Done.scope)."""
    return {"fingerprint": fingerprint, "holder": holder,
            "unknown": {"write": write, "generation": generation,
                        "before": [list(t) for t in tried[:MAX_ATTEMPTS - 1]]},
            "status": status, "extra": body,
            **({} if scope is None else {"scope": scope}),
            **({} if receipt else {"receipt": False})}


def unconfirmed_record(fingerprint: str, holder: str, generation: int | None, status: int,
                       body: dict[str, Any], scope: str | None) -> dict[str, Any]:
    """A key's record after a write committed but not yet on `min_replicas` replicas (503
    not_durable): its answer, replayed to a retry once a replica holds it."""
    return {"fingerprint": fingerprint, "holder": holder, "generation": generation,
            "status": status, "extra": body, "unconfirmed": True,
            **({} if scope is None else {"scope": scope})}


def no_event(cur: Any, new: Any) -> Any:
    """The `describe` of a no-op write (never called: it changes nothing)."""
    raise AssertionError("a no-op write has no audit event")
