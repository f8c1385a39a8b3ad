"""A drill's restore and end when the admin URL it was given stops answering mid-drill
(the instance behind it crashed, was SIGKILLed, or its host went away): sent through
another instance's admin address, so the restore still runs while any instance does.

Given one instance's own admin URL (the README's first drill: `http://127.0.0.1:8081`),
a drill whose instance died after the injection said `RESTORE FAILED`, named a restore
command for that same dead address, and left its kill (of a production route too, with
`--production`) in force until the fleet closed it, `drills.auto_restore_after` past the
drill's deadline: minutes. The other addresses are those the instances publish with their
heartbeat (signed with the state key: one written into the store without it is ignored),
of the admin URL's scheme only (an `https` URL's token never goes out over plain http).
The write keeps its Idempotency-Key: an instance that applied it before it died, its
answer lost, is answered from the store's record, not applied twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from gateway.control.drillload import AdminClient, DrillApiError

__all__ = ["Reach"]

#: how long an address that cannot be reached is tried before the next one (a 503, the
#: store away, is retried for the whole time: every instance would answer it)
UNREACHABLE_FOR = 3.0


class Reach:
    """`call`: through `api`; when it cannot be reached, through each of `admins` in turn,
    round and round until `retry_for` is spent (the first that answers is used from then
    on: `api`)."""

    def __init__(self, api: AdminClient, admins: Sequence[str],
                 say: Callable[[str], None]) -> None:
        self.api = api
        self.admins = list(admins)
        self.say = say

    def _others(self) -> list[AdminClient]:
        scheme = urlsplit(self.api.base).scheme
        return [self.api.at(a) for a in self.admins
                if a.rstrip("/") != self.api.base and urlsplit(a).scheme == scheme]

    async def call(self, method: str, path: str, body: dict[str, Any] | None,
                   retry_for: float) -> dict[str, Any]:
        key = uuid.uuid4().hex
        deadline = time.monotonic() + retry_for
        apis = [self.api, *self._others()]
        first: DrillApiError | None = None
        while True:
            for api in apis:
                try:
                    out = await api.call(method, path, body,
                                         max(0.0, deadline - time.monotonic()), key=key,
                                         unreachable_for=UNREACHABLE_FOR if len(apis) > 1
                                         else None)
                except DrillApiError as exc:
                    if exc.status != 0:
                        raise
                    first = first or exc
                    continue
                if api is not self.api:
                    self.say(f"the admin API at {self.api.base} cannot be reached ({first}): "
                             f"went through {api.base}, another instance's admin address")
                    self.api = api
                return out
            if time.monotonic() >= deadline:
                assert first is not None
                raise first
