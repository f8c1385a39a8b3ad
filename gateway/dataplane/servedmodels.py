"""Which models each version has answered, on routes that declare their backend protocol:
whether a stable's "model not ready" answer is its own fault.

A not-ready answer moves the request on, and the version that gave it is blamed (outlier
detection, canary analysis) when another version then serves the request (answers.py). A
client chooses the model, though: naming one that only a canary holds (a new model, or a
model version in the v2 path, `/v2/models/iris/versions/2/infer`) made the stable's
not-found answer count, and a handful of such requests ejected the healthy stable and sent
everyone to the canary. So the stable is blamed only for a model it has answered before
(2xx): one it unloaded, the outage outlier detection is for. Any other version is blamed as
before: a canary that lacks what the stable serves is the canary's fault, and failing
its analysis is the safe direction.

The model is the v2 path's model (and version: an inference, or a GET or HEAD of the
model's metadata or readiness, all kept as one, the path up to the model), or an
OpenAI-style body's top-level `model` as the version's backend reads it (the version's
`model` when routing rewrites it), kept with the request's path: only an inference (POST)
whose model the gateway reads, or a v2 model's metadata or readiness, is noted or blamed.
A request whose model it cannot read (a body naming `model` twice, which the backend reads
as it likes; a `GET /v1/models/<m>` with no body), or an answer to
another request (the model list, a CORS preflight, a path that reads no body), says
nothing of whether the stable holds a model, and a client chooses all of them. Every
version's 2xx answers are noted: a not-ready answer to a request whose body streamed (it
cannot move, so no other version can say whether anyone holds the model) blames any version
only for a model it has answered (finish.py). On an
`openai` route whose routing did not read the body, that is one strict read of the body
per answer, 5 µs for a small one, ~120 µs for 70 KB with `model` last
(measured), against an inference that takes milliseconds. Pure data and functions; the
proxy owns one `ServedModels`.
"""

from __future__ import annotations

import re
from collections import OrderedDict

from gateway.dataplane.jsonpeek import ModelField, Unreadable, find_model
from gateway.domain.target import Target

__all__ = ["MAX_ASKED", "MAX_SERVED", "Asked", "ServedModels", "model_key"]

#: (route, version, url, (path, model)) kept; the least recently answered are forgotten.
#: A key answered again was left where it was first noted, so the model every client asks
#: went first: any client's 4096 answered paths (`/v2/models/m/versions/<any>` on KServe),
#: spread over any time, made a later unload of it go unblamed for good
#: (tests/test_notready_streamed_blame.py). A key answered again is moved to the newest once
#: more than half are held (a move costs ~100 ns; below half none can go before it is
#: answered again past half): only a key answered less often than once per 2048 others
#: noted, or an unload right after such churn, goes unblamed
MAX_SERVED = 4096
#: the longest path plus model noted: both are the client's text (a `model` of up to 64 KiB
#: in a body read whole), and 4096 such entries held 256 MiB. Real model names and inference
#: paths are far shorter; a longer one is never noted, so the stable is not blamed for it
#: (the safe direction, as for any model it has not answered)
MAX_ASKED = 1024

#: a v2 model (and version) in an inference's path (POST), or in a GET or HEAD of its
#: metadata or readiness (`/v2/models/<m>[/versions/<v>]`, and `/ready`): kept as the path up
#: to the model, so that an answer to either says the version holds it (notready.py)
_V2_MODEL = re.compile(r"/v2/models/([^/]+(?:/versions/[^/]+)?)/[^/]+$")
_V2_ASK = re.compile(r"/v2/models/([^/]+(?:/versions/[^/]+)?)(?:/ready)?$")


#: what `ServedModels` keeps of a request: (its path, the model its backend reads)
Asked = tuple[str, str]


def model_key(protocol: str, method: bytes, path: str, field: ModelField | None,
              body: bytes | None, complete: bool, rewrite: str | None = None) -> Asked | None:
    """The inference a request asks for, as `ServedModels` keeps it (see the docstring):
    None when it is not an inference (POST; on `v2`, also a GET or HEAD of a model's
    metadata or readiness) or its model cannot be read. `rewrite`: the
    version's `model`, which its backend reads instead of a model routing read (`field`)."""
    if protocol == "v2":
        if method == b"POST":
            m = _V2_MODEL.search(path)
        elif method == b"GET" or method == b"HEAD":
            m = _V2_ASK.search(path)
        else:
            return None
        return (path[:m.end(1)], m.group(1)) if m is not None else None
    if method != b"POST":
        return None
    if field is not None:
        return path, rewrite or field.value
    if body is None or not complete:
        return None
    try:
        found = find_model(body, True)
    except Unreadable:
        return None
    return (path, found.value) if found is not None else None


#: a version as its answers are kept: (route, version, url). A reload that points a version
#: at another url (a new deployment under the same name) starts it afresh, as its health
#: record does (control/probes.py): the models its old backend answered were kept, so a
#: stable moved to a backend without a model the canary holds was blamed for it, and
#: clients naming it ejected the healthy stable (tests/test_notready_url_change.py)
_Key = tuple[str, str, str, Asked]


class ServedModels:
    """(route, version, url, path, model) answered 2xx, the MAX_SERVED answered last."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: OrderedDict[_Key, None] = OrderedDict()

    def note(self, target: Target, asked: Asked | None) -> None:
        if asked is None or len(asked[0]) + len(asked[1]) > MAX_ASKED:
            return  # (not an inference, or its model unread, or too long to keep)
        key = (target.route, target.name, target.url, asked)
        seen = self._seen
        if key in seen:
            if len(seen) > MAX_SERVED // 2:  # (answered again: the newest; see above)
                seen.move_to_end(key)
            return
        seen[key] = None
        if len(seen) > MAX_SERVED:
            seen.popitem(last=False)

    def answered(self, target: Target, asked: Asked | None) -> bool:
        return asked is not None and (target.route, target.name, target.url,
                                      asked) in self._seen
