"""How much token-checking work one client address may cause: a token bucket per address.

Owns `TokenBucket`: `rate` checks a second with bursts of up to `burst`, per address (an
IPv6 /64 counts as one: admin/callers.py keys the buckets; the shared refill rule of
gateway/tokenbucket.py), and its 429. The admin API consults it only
for a token it has not verified before (admin/auth.py's cache comes first), so a flood of
bad tokens from one address costs at most `rate` signature checks a second and never stops
a token that was verified already; a new valid token from that address is checked as soon
as the bucket holds one.
"""

from __future__ import annotations

import math

from gateway import tokenbucket
from gateway.errors import ApiError

__all__ = ["TokenBucket"]


class TokenBucket(tokenbucket.TokenBucket):
    """Token checks per client address (the refill rule: gateway/tokenbucket.py)."""

    def refusal(self, wait: float) -> ApiError:
        retry = max(1, math.ceil(wait))
        return ApiError(429, "too_many_attempts",
                        "too many token checks from this address; a token used before is "
                        f"still accepted, a new one after {retry}s",
                        headers={"Retry-After": str(retry)})
