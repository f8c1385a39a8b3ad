"""What a drill says of the instances still running without its restore (control/
drillbehind.py asks them): the lists a drill's report keeps (`restore_check`), and the
lines it prints of them, each naming what could be why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Behind"]

_UNPROVED = {
    "none": ("answered without a `proof` (a killgate older than the drill's proofs answers "
             "so: upgrade it, then drill again; else another process at that address, a "
             "replayed heartbeat's?)"),
    "bad": ("answered with a `proof` that does not verify with the drill's keys (signed with "
            "a state key the instance that opened the drill does not hold: a key rotation "
            "not done on every instance? else forged at that address, a replayed "
            "heartbeat's?)"),
}


@dataclass(slots=True)
class Behind:
    """`late`: alive without the restore (proved so, or no keys to prove it with);
    `unverified`: answered so at their address without a valid proof (the drill fails: not
    confirmed either way); `unverified_applied`: answered "applied" there without a valid
    proof (the drill fails); `unproven`: answered "applied", taken at their word (no keys
    to check with); `unasked`: addresses left unasked when the drill's asks were spent (the
    drill fails). `no_proof`: those of the unverified that sent no proof at all; `quiet`:
    those of the late not heard again after answering so (asked again, or not: the drill's
    asks ran out). `applied`: those found to run the restore (the fleet's status showed
    them live at its generation, or they answered so: proved, or taken at their word
    without keys): a receipt taken earlier that named one `pending` is overtaken."""
    late: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    unverified_applied: list[str] = field(default_factory=list)
    unproven: list[str] = field(default_factory=list)
    unasked: list[dict[str, Any]] = field(default_factory=list)
    asks: int = 0
    proof: str = "none"
    no_proof: set[str] = field(default_factory=set)
    quiet: set[str] = field(default_factory=set)
    applied: set[str] = field(default_factory=set)

    def check(self) -> dict[str, Any]:
        """The report's `restore_check`."""
        return {"proof": self.proof, "asks": self.asks, "late": self.late,
                "unverified": self.unverified, "unverified_applied": self.unverified_applied,
                "unproven": self.unproven, "unasked": self.unasked}

    def lines(self, generation: int) -> list[str]:
        """What the drill says of them on stderr (`generation`: the restore's)."""
        out = []
        if self.late:
            out.append(f"RESTORE NOT APPLIED by {', '.join(self.late)}: alive, running an "
                       f"older generation than the restore's ({generation}), cut off from "
                       "the store?")
        if quiet := [name for name in self.late if name in self.quiet]:
            out.append(f"  ({', '.join(quiet)}: answered so, then not heard again after the "
                       "time given to catch up: a stalled admin listener, a cut admin network, "
                       "or gone since? its /readyz shows the generation it holds)")
        return out + [f"RESTORE NOT CONFIRMED: {why}" for why in self.problems()]

    def _unproved(self, names: list[str], said: str, then: str) -> list[str]:
        out = []
        for cause in ("none", "bad"):
            these = [n for n in names if (n in self.no_proof) == (cause == "none")]
            if these:
                out.append(f"could not confirm the restore on {', '.join(these)}: the process "
                           f"at the admin address each published said {said}, but "
                           f"{_UNPROVED[cause]}; {then}")
        return out

    def problems(self) -> list[str]:
        """Why the drill cannot pass on these answers (besides `late`)."""
        out = self._unproved(
            self.unverified, "it still runs an older generation than the restore's",
            "it may be alive without the restore, enforcing the drill's kill: its /readyz "
            "shows the generation it holds")
        out += self._unproved(self.unverified_applied, "it applied it",
                              "the instance itself may still enforce the drill's kill")
        for u in self.unasked:
            out.append(f"not asked whether they applied the restore: "
                       f"{', '.join(u['instances'])} at {u['admin']}: {u['why']}")
        return out
