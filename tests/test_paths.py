"""dataplane/paths.py: which request targets are refused, which are normalised, and how."""

from __future__ import annotations

import pytest

from gateway.dataplane.paths import BadTarget, route_host, split_target


@pytest.mark.parametrize("raw, path, forwarded", [
    ("/v2/models/iris/infer", "/v2/models/iris/infer", "/v2/models/iris/infer"),
    ("/v2/models/iris/infer?a=1&b=/../x", "/v2/models/iris/infer",
     "/v2/models/iris/infer?a=1&b=/../x"),  # the query is not a path
    ("//v2//models/iris///infer", "/v2/models/iris/infer", "/v2/models/iris/infer"),
    ("//v2/models/iris?x=//y", "/v2/models/iris", "/v2/models/iris?x=//y"),
    ("/v2/models/%69ris/infer", "/v2/models/iris/infer", "/v2/models/%69ris/infer"),
    ("/v1/%E6%97%A5", "/v1/\u65e5", "/v1/%E6%97%A5"),
    ("/a/.well-known/b..c/...", "/a/.well-known/b..c/...", "/a/.well-known/b..c/..."),
])
def test_accepted_targets(raw: str, path: str, forwarded: str) -> None:
    assert split_target(raw) == (path, forwarded)


@pytest.mark.parametrize("raw", [
    "http://evil.example/v2/models/iris", "*", "v2/models/iris",
    "/v2/models/iris/../other", "/v2/models/iris/./x", "/v2/models/iris/..", "//..//x",
    "/v2/models/iris;x=1/infer", "/v2/models/iris/..;/other", "/x/..;/v2/models/iris",
    "/v2/models/iris%3bx/infer", "/v2/models/iris%2Finfer", "/v2/models/iris/%2e%2e/x",
    "/a%5cb", "/a%00b", "/a\\b", "/v1/\u65e5", "/v1/%ff%fe",
    # a fragment is never part of a request target (RFC 9112 §3.2), and uvicorn (so
    # MLServer and vLLM) and aiohttp drop it: /v2/models/iris#x is /v2/models/iris there
    "/v2/models/iris#x", "/v2/models/iris#/../other", "/v2/models/iris?a=1#x", "/#",
])
def test_refused_targets(raw: str) -> None:
    with pytest.raises(BadTarget):
        split_target(raw)


@pytest.mark.parametrize("raw, says", [
    ("http://evil.example/v2/models/iris", "not as an absolute URL"),
    ("*", "'OPTIONS *'"),
    ("v2/models/iris", "a path starting with '/'"),
])
def test_a_target_that_is_not_a_path_is_refused_saying_what_it_is(raw: str, says: str) -> None:
    """`OPTIONS *` (curl's --request-target '*') was told to send a path 'not as an absolute
    URL', which it was not: each form is named for what it is."""
    with pytest.raises(BadTarget) as exc:
        split_target(raw)
    assert says in str(exc.value)
    assert raw == "http://evil.example/v2/models/iris" or "absolute" not in str(exc.value)


@pytest.mark.parametrize("value, host", [
    (None, ""), ("", ""), ("Models.Example.COM", "models.example.com"),
    ("models.example.com.", "models.example.com"), ("models.example.com.:8080", "models.example.com"),
    ("models.example.com:8080", "models.example.com"), ("[::1]:8080", "[::1]"), ("[::1]", "[::1]"),
    ("127.0.0.1:80", "127.0.0.1"),
])
def test_route_host(value: str | None, host: str) -> None:
    assert route_host(value) == host


@pytest.mark.parametrize("value", [
    "caf\u00e9.example", "a b", "a/b", "a\udcff", "x@y", "\u65e5",
    # a port that is not digits, a second port, brackets around no IP literal: routing would
    # read one host ("x:y" of "x:y:z", "[::1]" of "[::1]evil") and X-Forwarded-Host another
    "x:y:z", "models.example.com:evil", "a:1:2", "[::1]evil", "[::1]:80:80", "a]b", "[a",
    "a[::1]",
])
def test_hosts_that_are_not_host_names_are_refused(value: str) -> None:
    with pytest.raises(BadTarget):
        route_host(value)
