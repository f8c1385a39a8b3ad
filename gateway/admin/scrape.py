"""GET /metrics on the admin listener: this instance's page, one render per wait.

Owns the scrape handler: concurrent scrapes share one render made after they all arrived
(admin/coalesce.py), keyed by the format the page is written in (not the Accept header as
sent); too many formats already waiting is a 429 with Retry-After. Each page names the
instance whose counters it holds. Imports only admin/ and telemetry/exposition.py.
"""

from __future__ import annotations

from collections.abc import Hashable

from aiohttp import web

from gateway.admin.coalesce import Coalesced, Crowded, Steps, sliced
from gateway.admin.ports import Counters, MetricsPage
from gateway.errors import ApiError
from gateway.telemetry import exposition

__all__ = ["Scrapes"]


class Scrapes:
    """The /metrics handler; `page` makes the page's parts (startup.py's, from the
    collectors)."""

    def __init__(self, instance: str, page: MetricsPage, counters: Counters) -> None:
        self.instance = instance
        self.page = page
        self.counters = counters
        self._renders: Coalesced[tuple[bytes, str]] = Coalesced(self._render)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body, ctype = await self._renders.get(
                exposition.scrape_format(request.headers.get("Accept")))
        except Crowded as crowded:
            self.counters.inc("killgate_admin_refused_total", ("scrapes",),
                              label_names=("reason",))
            raise ApiError(429, "scrapes_crowded", "renders of this page in other formats "
                           "already wait to start; scrape again after Retry-After seconds",
                           {"Retry-After": str(crowded.retry_after)}) from None
        # which instance's page this is (a drill's abort watch reads the pages through a
        # load-balanced admin URL too, and compares counters per instance)
        return web.Response(body=body, headers={  # (+ ANSWER_HEADERS)
            "content-type": ctype, "x-killgate-instance": self.instance})

    def _render(self, accept: Hashable) -> Steps[tuple[bytes, str]]:
        """The page in steps (admin/coalesce.py): the values taken in the first, then
        written a slice at a time."""
        parts, ctype = self.page(accept if isinstance(accept, str) else None)
        body = yield from sliced(parts)
        return body, ctype
