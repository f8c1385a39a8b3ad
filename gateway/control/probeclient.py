"""The HTTP side of active health checks: one aiohttp client session, one GET per check.

Owns the probe session of a process (no connection limit: one prober per backend bounds
them; no redirects followed; its own User-Agent) and what one check is: the status
decides (2xx healthy), at most PROBE_BODY of the body is read, and a timeout or a failed
connection is an unhealthy answer with its reason, never an exception. Which backends are
checked, how often, and what a result changes is probes.py's.
"""

from __future__ import annotations

import aiohttp

from gateway.sockets import connect_failure

__all__ = ["PROBE_BODY", "ProbeClient"]

PROBE_BODY = 64 * 1024  # the most of a health answer's body read


class ProbeClient:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        self._session = aiohttp.ClientSession(
            # (no connection limit: one prober per backend bounds them, and a shared limit
            # let hung health checks hold every connection while healthy ones timed out)
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            auto_decompress=False, skip_auto_headers=("User-Agent",),
            headers={"user-agent": "killgate-health/1"})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check(self, url: str, timeout: float) -> tuple[bool, str | None]:
        """(healthy, why not)."""
        assert self._session is not None
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=timeout),
                                         allow_redirects=False) as r:
                # the status decides; a small body is read through (a cut one fails the
                # check), a large one is not read into memory (the connection then closes)
                left = PROBE_BODY
                while left > 0:
                    chunk = await r.content.read(left)
                    if not chunk:
                        break
                    left -= len(chunk)
                if 200 <= r.status < 300:
                    return True, None
                return False, f"HTTP {r.status}"
        except TimeoutError:
            return False, f"no answer within {timeout:g}s"
        except aiohttp.ClientConnectorError as exc:  # (in words, as in the data plane's 502)
            return False, "cannot connect: " + connect_failure(exc.os_error)
        except (aiohttp.ClientError, OSError) as exc:
            return False, type(exc).__name__
