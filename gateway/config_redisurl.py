"""What a redis `state.url` may say: only what the store reads (gateway/state/resp.py's
`parse_endpoint`), so no part of it is silently dropped: a database that is not a number
(redis-py's grammar connects to db 0), TLS options on a plain redis:// or unix:// URL (the
connection stays unencrypted), options the store never reads. Pure: standard library only,
and never echoes a value of the URL (it may hold a password)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["SSL_KEYS", "redis_url_problem"]

#: the TLS options the store reads from a rediss:// URL (a test holds them equal to resp.py's)
SSL_KEYS = frozenset({"ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile",
                      "ssl_cert_reqs", "ssl_check_hostname", "ssl_password", "ssl_ca_data"})
_READ = frozenset({"db", "username", "password"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_DB = "a database number (0, 1, ...)"


def _named(key: str) -> str:
    return f"the option {key!r}" if _NAME.fullmatch(key) else "an option"


def redis_url_problem(url: str) -> str | None:
    """Why the store could not use all of `url` as written (None when it can)."""
    try:
        u = urlsplit(url)
        query = parse_qsl(u.query, keep_blank_values=True)
    except ValueError:
        return None  # (the store's own parser names what is wrong: `killgate check`)
    if u.scheme == "redis+sentinel":
        parts = [p for p in u.path.split("/") if p]
        if len(parts) > 1 and not parts[1].isdigit():
            return f"the part after the service name must be {_DB}: redis+sentinel://h:26379/mymaster/0"
        if len(parts) > 2:
            return "a redis+sentinel:// URL ends at the database: redis+sentinel://h:26379/mymaster/0"
        if query:
            return "a redis+sentinel:// URL takes no ?options (the store would ignore them)"
        return None
    if u.scheme in ("redis", "rediss") and not re.fullmatch(r"/?|/[0-9]+", unquote(u.path)):
        return (f"the path must be {_DB} or nothing, as in {u.scheme}://host:6379/0 "
                "(as written, the store would use db 0)")
    for key, value in query:
        if key == "db" and not value.isdigit():
            return f"?db= must be {_DB}"
        if key.startswith("ssl_") and u.scheme != "rediss":
            return (f"{_named(key)} is a TLS option: it needs a rediss:// URL (on "
                    f"{u.scheme}:// the connection is not encrypted and it would be ignored)")
        if key.startswith("ssl_") and key not in SSL_KEYS:
            return f"{_named(key)} is not a TLS option the store reads ({', '.join(sorted(SSL_KEYS))})"
        if not key.startswith("ssl_") and key not in _READ:
            return (f"{_named(key)} is not read by the store (it reads db, username, password "
                    "and, with rediss://, ssl_*; its timeouts are state.command_timeout and "
                    "state.start_timeout)")
    return None
