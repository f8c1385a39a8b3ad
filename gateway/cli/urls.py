"""What the admin client is given to reach the API: the admin URL and the bearer token, each
checked before anything is sent, and never echoed where it may hold a secret (a password in
the URL, a token pasted where the URL goes). Standard library only.
"""

from __future__ import annotations

import re
import urllib.parse

from gateway.cli.errors import ClientError

__all__ = ["admin_base", "clean_token"]


#: a JWS in compact form: its header is a JSON object, base64url of `{"`
_A_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{8,}\.")


def admin_base(base: str) -> str:
    """The admin API's URL as given (blanks around it dropped), or a ClientError saying what
    is wrong with it: not an http(s) URL with a host, a bad port, or a user name or password
    in it (urllib would take `user:pass@host` for the host name, and every message would
    print the password; that URL is never echoed)."""
    base = base.strip()
    if _A_JWT.search(base):  # (KILLGATE_ADMIN_URL=$TOKEN, a slip: every message echoes it)
        raise ClientError("--admin (or $KILLGATE_ADMIN_URL) holds what looks like a token "
                          "(not shown): give the admin API's URL there, the token with --token "
                          "or $KILLGATE_TOKEN")
    try:
        parts = urllib.parse.urlsplit(base)
        creds = parts.username is not None or parts.password is not None
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError as exc:
        v6 = "[" not in base and base.partition("//")[2].count(":") > 1
        hint = "; an IPv6 address goes in brackets: http://[::1]:8081" if v6 else ""
        raise ClientError(f"--admin (or $KILLGATE_ADMIN_URL) is not a URL: {exc}{hint}") from None
    if creds:
        raise ClientError("--admin (or $KILLGATE_ADMIN_URL) carries a user name or password; "
                          "give the URL without them, and the token with --token")
    if parts.query or parts.fragment or base.endswith(("?", "#")):
        # (every call's path went after it: `?x=1/v1/kill`, a POST to the listener's root;
        # not echoed: a query may carry a key)
        raise ClientError("--admin (or $KILLGATE_ADMIN_URL) has a query or fragment (`?...`, "
                          "`#...`): give the admin listener's URL alone, such as "
                          "http://127.0.0.1:8081")
    if parts.scheme not in ("http", "https") or not parts.hostname or any(
            ord(c) < 33 or ord(c) == 127 for c in base):
        raise ClientError(f"--admin (or $KILLGATE_ADMIN_URL) {base!r} is not an http:// or "
                          "https:// URL, such as http://127.0.0.1:8081")
    return base.rstrip("/")


def clean_token(token: str | None) -> str | None:
    """The bearer token as it is sent: blanks around it dropped (a secret mounted from a file
    ends in a line break); one with a blank, a line break or a character a JWT never has
    inside is refused without echoing it (the HTTP library's own error prints it whole)."""
    token = (token or "").strip()
    if token and not all(33 <= ord(c) < 127 for c in token):
        raise ClientError("the token (--token or $KILLGATE_TOKEN) holds a blank, a line break "
                          "or a character a JWT never has; give the token alone")
    return token or None
