"""The data plane's side of failover drills: which version a drill request must see fail.

Owns the check of the `x-killgate-drill` header against the drill key and the routing
snapshot's open drills (domain/drilltoken.py). Costs nothing for a request without the
header or while no drill is open; a valid token is verified once, then remembered.
A user's request (no token, or any token that does not verify) is never touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from gateway.domain.drilltoken import HEADER, Claims, fault_version, verify
from gateway.domain.statedoc import StateDoc

__all__ = ["FaultGate"]

_CACHE = 256


class FaultGate:
    def __init__(self, key: bytes | None, clock: Callable[[], float] = time.time,
                 on_refused: Callable[[], None] | None = None) -> None:
        self.key = key
        self.clock = clock
        self.on_refused = on_refused
        self._valid: dict[str, Claims] = {}

    def version(self, headers: Mapping[str, str], doc: StateDoc, route: str) -> str | None:
        """The version this request must see fail (None for nearly every request)."""
        if not doc.drills or self.key is None:
            return None
        token = headers.get(HEADER)
        if token is None:
            return None
        now = self.clock()
        claims = self._valid.get(token)
        if claims is None:
            claims = verify(self.key, token, now)
            if claims is None:
                if self.on_refused is not None:
                    self.on_refused()
                return None
            if len(self._valid) >= _CACHE:
                self._valid.clear()
            self._valid[token] = claims
        return fault_version(claims, doc, route, now)
