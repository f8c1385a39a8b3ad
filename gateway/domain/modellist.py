"""OpenAI's model listing, answered from the routes that match by `model`.

OpenAI SDKs (and LangChain, and most UIs) call `GET /v1/models` at start-up. On routes
that match by the body's `model` that request has no body, so no route matched it: 404
`no_route`. Passing it to one version would list that server's own model name (a version
may rewrite `model`: `llama-3-8b-instruct-v1`), a name no route routes, and only that
server's. So, as Envoy AI Gateway and LiteLLM do, the gateway answers it with the names
its clients send: `GET <path>/models` lists every model a route would take at that path
(and Host, and headers), `GET <path>/models/<name>` describes one. Only asked when no
route matched the request (a route for the path itself still gets it): nothing on the
fast path. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from gateway.domain.routetable import RouteTable

__all__ = ["model_listing"]


def _model(name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "killgate"}


def model_listing(table: RouteTable, path: str, host: str,
                  headers: Mapping[str, str]) -> bytes | None:
    """The body of the answer to a GET of `path` that no route matched: the list of the
    models routed there, or the one it names; None when it is neither (a 404 then)."""
    if not table.model_routes:
        return None
    if path.rstrip("/").endswith("/models"):
        names = [p.model for p in table.routes if p.model is not None
                 and table.match(path, host, headers, p.model) is p]
        if not names:
            return None
        return json.dumps({"object": "list",
                           "data": [_model(n) for n in dict.fromkeys(names)]}).encode()
    _, sep, name = path.partition("/models/")  # (a name may hold a `/`: org/model)
    if sep and name:
        plan = table.match(path, host, headers, name)
        if plan is not None and plan.model == name:
            return json.dumps(_model(name)).encode()
    return None
