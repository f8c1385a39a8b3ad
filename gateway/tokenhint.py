"""What a client adds to a 401 from the admin API: how to get a token the gateway takes.

The API's 401 says only "a valid bearer token is required" (by design: it tells a caller
nothing about the token it refused); its clients (`cli/http.py`, a drill's
`control/drillload.py`) add this hint in their own words. Foundations: imports nothing.
"""

from __future__ import annotations

__all__ = ["token_refused"]


def token_refused(kind: str, sent: bool) -> str:
    """What a client adds to a 401 (whose message is only 'a valid bearer token is
    required', by design): what the gateway takes, or that no token was sent."""
    if not sent:
        return " (no token was sent: give --token or set KILLGATE_TOKEN)"
    if kind == "expired":
        return (" (the token has expired: use a new one, minted by `killgate token -c CONFIG "
                "--subject NAME --scope SCOPES` in a shell with the gateway's secret; a "
                "`killgate demo`'s, by restarting it, or by `killgate token` where "
                "KILLGATE_JWT_SECRET was set before it started)")
    if kind == "invalid_token":
        return (" (the gateway takes a token signed with its own secret or key, for its "
                "issuer and audience, not expired or issued too long ago: `killgate token "
                "-c CONFIG` takes them from the gateway's config file, in a shell with the "
                "gateway's secret)")
    return ""
