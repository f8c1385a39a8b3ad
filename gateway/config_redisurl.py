"""What a redis `state.url` may say: only what the store reads (gateway/state/resp.py's
`parse_endpoint`), so no part of it is silently dropped: a database that is not a number
(redis-py's grammar connects to db 0), TLS options on a plain redis:// or unix:// URL (the
connection stays unencrypted), options the store never reads, a user name or password
holding '/', '?' or '#' unencoded (it ends the host early: its end is read as the path,
options or fragment). Pure: standard library only, and never echoes a value of the URL (it
may hold a password), nor a word of its user information."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["SPLIT_USERINFO", "SSL_KEYS", "redis_url_problem", "unreadable", "userinfo_split"]

#: the TLS options the store reads from a rediss:// URL (a test holds them equal to resp.py's)
SSL_KEYS = frozenset({"ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile",
                      "ssl_cert_reqs", "ssl_check_hostname", "ssl_password", "ssl_ca_data"})
_READ = frozenset({"db", "username", "password"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_DB = "a database number (0, 1, ...)"
#: options whose value is text that may hold an '@' of its own (a password, a file path)
_TEXT = _READ | SSL_KEYS
SPLIT_USERINFO = ("a user name or password in it holds '/', '?' or '#' unencoded (an '@' "
                  "stands past the host), so the store would read part of it as the host, port, "
                  "database or options: percent-encode it (/ as %2F, ? as %3F, # as %23, "
                  "@ as %40)")


def _past_host(url: str) -> str:
    """The text after the URL's host as urllib splits it (where a split password ends up)."""
    rest = url.split("://", 1)[-1]
    try:
        netloc = urlsplit(url).netloc
    except ValueError:  # (an unclosed '[': all of it may be user information)
        return rest
    return rest[len(netloc):] if rest.startswith(netloc) else rest


def userinfo_split(url: str) -> bool:
    """An '@' past the host, except in the value of an option the store reads as text
    (False for a URL urllib cannot split: the store's parser refuses it, see `unreadable`)."""
    try:
        u = urlsplit(url)
        query = parse_qsl(u.query, keep_blank_values=True)
    except ValueError:
        return False
    if "@" in u.path or "@" in u.fragment:
        return True
    return any("@" in key or ("@" in value and key not in _TEXT) for key, value in query)


def unreadable(url: str, exc: Exception) -> str:
    """What to say of `url` when the store's parser refused it with `exc`: its message,
    unless that could quote part of the URL's user information (an '@' past the host: its
    parser read a split password as host or port) or the password urllib finds whole."""
    if "@" in _past_host(url):
        return ("the URL cannot be read (redis://[USER:PASSWORD@]HOST:PORT/DB, rediss://, "
                "unix://, redis+sentinel://HOST:26379,.../SERVICE/DB); if a user name or "
                "password holds '/', '?', '#' or '@', percent-encode it (%2F, %3F, %23, %40)")
    msg = str(exc)
    try:
        secret = urlsplit(url).password
    except ValueError:
        secret = None
    return msg.replace(secret, "***") if secret else msg


def _named(key: str) -> str:
    return f"the option {key!r}" if _NAME.fullmatch(key) else "an option"


def redis_url_problem(url: str) -> str | None:
    """Why the store could not use all of `url` as written (None when it can)."""
    try:
        u = urlsplit(url)
        query = parse_qsl(u.query, keep_blank_values=True)
    except ValueError:
        return None  # (the store's own parser names what is wrong: `killgate check`)
    if userinfo_split(url):
        return SPLIT_USERINFO
    hosts = u.netloc.rsplit("@", 1)[-1]
    if "$" in hosts:
        return ("its host holds '$': killgate does not expand environment variables in the "
                "config; write the value, or render the file before it is deployed")
    odd = next((c for c in hosts if not " " < c < "\x7f"), None)
    if odd is not None:  # (a zero-width space pasted with it: no store ever answered)
        return (f"its host holds the character U+{ord(odd):04X}, not printable ASCII (pasted "
                "with it?): delete it, or write the name in its xn-- (IDNA) form")
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
