"""OpenAI's model listing, answered from the routes that match by `model`.

OpenAI SDKs (and LangChain, and most UIs) call `GET /v1/models` at start-up. On routes
that match by the body's `model` that request has no body, so no route matched it: 404
`no_route`. Passing it to one version would list that server's own model name (a version
may rewrite `model`: `llama-3-8b-instruct-v1`), a name no route routes, and only that
server's. So, as Envoy AI Gateway and LiteLLM do, the gateway answers it with the names
its clients send: `GET <path>/models` lists every model a route would take at that path
(and Host, and headers), `GET <path>/models/<name>` describes one. A killed model is not
listed (a UI that picks the first model listed, or a client that checks the listing, would
pick it and get 503 `killed`; a kill is meant to take it away): a route killed (or killed
globally, or fail-closed), or every version of it killed. Asked for by name it is 503
`killed`, never the route's fallback (whose answer would say the model exists), and while
the kill state is not loaded the listing is 503 `state_unknown` (it cannot tell what is
killed). Only asked when no route matched the request (a route for the path itself still
gets it): nothing on the fast path. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from gateway.domain.routetable import RouteTable
from gateway.domain.routing import STATE_UNKNOWN, RoutePlan

__all__ = ["Listing", "model_listing", "without_model"]


def _model(name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "killgate"}


def _killed(p: RoutePlan) -> bool:
    """Whether a kill takes the route's model away (not: versions out for health only)."""
    return p.killed is not None or (
        not p.serves and bool(p.excluded)
        and all(why == "killed" for why in p.excluded.values()))


class Listing:
    """The answer to a GET of `<path>/models[/<name>]`: `body` (200), or `plan`, the
    route of a killed model asked for by name (or any route while the state is unknown),
    whose refusal answers it."""

    __slots__ = ("body", "plan")

    def __init__(self, body: bytes | None = None, plan: RoutePlan | None = None) -> None:
        self.body, self.plan = body, plan


def _listed(table: RouteTable, path: str, host: str,
            headers: Mapping[str, str]) -> list[RoutePlan]:
    """The routes `table.match(path, host, headers, p.model) is p` holds for, in one pass
    (asking `match` for each was quadratic in the routes: 85 ms of the event loop per
    request with 300 routes, for any client): the first route for each model, up to the
    first route that takes any model there."""
    first: dict[str, RoutePlan] = {}
    for p in table.routes:
        if p.matches(path, host, headers, p.model):
            if p.model is None:
                break
            first.setdefault(p.model, p)
    return list(first.values())


def model_listing(table: RouteTable, path: str, host: str,
                  headers: Mapping[str, str]) -> Listing | None:
    """The answer to a GET of `path` that no route matched: the list of the models routed
    there, or the one it names; None when it is neither (a 404 then)."""
    if not table.model_routes:
        return None
    if path.rstrip("/").endswith("/models"):
        plans = _listed(table, path, host, headers)
        if not plans:
            return None
        unknown = next((p for p in plans if p.killed == STATE_UNKNOWN), None)
        if unknown is not None:
            return Listing(plan=unknown)
        names = [p.model for p in plans if p.model is not None and not _killed(p)]
        return Listing(json.dumps({"object": "list",
                                   "data": [_model(n) for n in dict.fromkeys(names)]}).encode())
    _, sep, name = path.partition("/models/")  # (a name may hold a `/`: org/model)
    if sep and name:
        plan = table.match(path, host, headers, name)
        if plan is not None and plan.model == name:
            return Listing(plan=plan) if _killed(plan) else Listing(json.dumps(
                _model(name)).encode())
    return None


def without_model(method: str, path: str) -> str:
    """What a 404 `no_route` adds for a request with no body on a path where routes match
    by the body's `model` (a new user's `GET /v1/models/<name>` of a model no route takes
    was "with no 'model' field in the body (not a JSON object or a form)", on a GET)."""
    _, sep, name = path.partition("/models/")
    if method in ("GET", "HEAD") and sep and name:
        return (f": no route takes model {name[:128]!r} there (GET "
                f"{path[:len(path) - len(name) - 1]} lists the models routed there)")
    return " with no body (the routes there match by the JSON body's 'model')"
