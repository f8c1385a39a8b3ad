"""A config file written in place, with a pause longer than the debounce, by a real writer
while a real `killgate serve` watches it (gateway/control/reload.py, gateway/configfile.py).

`cp`, an editor, `git checkout` on some setups, a slow network filesystem or a ConfigMap
tool may write the file in place and stop half-way for longer than
`server.reload_debounce`. Cut after a complete route entry, the half is itself a valid
config: applied, the routes of the second half answered 404 `no_route` until the next
change. The gateway must wait until the writer is done and apply the whole file only.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.configfile import parse_config_text
from tests.backends import echo_app
from tests.conftest import free_port, wait_until, write_config
from tests.test_configsettle import leases_work
from tests.test_reload import H

FIRST, SECOND = "/v2/models/iris/x", "/v2/models/second/x"


def _routes(p1: int, p2: int, w1: int, w2: int) -> str:
    return textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{p1}", weight: {w1}}}
            - {{name: v2, url: "http://127.0.0.1:{p2}", weight: {w2}}}
        - name: second
          match: {{path_prefix: /v2/models/second}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
        """)


async def test_a_file_written_in_place_with_a_pause_is_applied_only_whole(
        tmp_path: Path, backends, gateway_procs) -> None:
    if not leases_work(tmp_path):
        pytest.skip("no read leases here: a writer's pause cannot be told from its end "
                    "(README: write the file atomically)")
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    extra = "server: {reload_debounce: 50ms}\n"
    cfg = write_config(tmp_path, _routes(p1, p2, 100, 0), listen=listen, admin=admin,
                       extra=extra)
    new = write_config(tmp_path, _routes(p1, p2, 0, 100), listen=listen, admin=admin,
                       extra=extra, name="next.yaml").read_text()
    cut = new.index("  - name: second")
    # the first half is a valid config of its own: only the route `iris`, already moved
    assert [r.name for r in parse_config_text(new[:cut]).routes] == ["iris"]
    gw = gateway_procs(cfg)
    await asyncio.get_running_loop().run_in_executor(None, gw.wait_ready)
    answers: list[tuple[str, int, str]] = []

    async with ClientSession() as s:
        async def ask(path: str) -> tuple[int, str]:
            async with s.get(gw.url + path) as r:
                await r.read()
                answers.append((path, r.status, r.headers.get("x-killgate-version", "")))
                return r.status, r.headers.get("x-killgate-version", "")

        assert await ask(SECOND) == (200, "v1") and await ask(FIRST) == (200, "v1")
        with open(cfg, "w") as f:  # noqa: ASYNC230 - in place, not atomic: the point
            f.write(new[:cut])
            f.flush()

            async def looked() -> bool:  # the watcher read the half (or found it busy)
                await ask(SECOND)
                out = gw.output()
                return "config_not_settled" in out or "config_reloaded" in out

            await wait_until(looked, 10, 0.02, "the watcher to look at the half file")
            # and for longer than the 1 s stat poll and many debounces: never the half
            until = time.monotonic() + 1.5

            async def waited() -> bool:
                await ask(SECOND)
                return time.monotonic() > until

            await wait_until(waited, 5, 0.02, "1.5 s of answers")
            await ask(FIRST)
            f.write(new[cut:])
        written = len(answers)

        async def whole() -> bool:
            return await ask(FIRST) == (200, "v2") and await ask(SECOND) == (200, "v1")

        await wait_until(whole, 10, 0.02, "the whole file applied")
    wrong = [a for a in answers[:written] if a[1:] != (200, "v1")]
    assert wrong == [], f"the half-written file was applied: {wrong[:3]}\n{gw.output()[-2000:]}"
    assert "config_rejected" not in gw.output()
    assert gw.stop() == 0


async def test_a_serve_waiting_for_a_writer_stops_promptly(tmp_path: Path, backends,
                                                           gateway_procs) -> None:
    """SIGHUP and the watcher both wait while another process keeps the config open for
    writing; SIGTERM still ends the real serve promptly, and cleanly."""
    if not leases_work(tmp_path):
        pytest.skip("no read leases here: the writer probe cannot tell (documented)")
    import signal

    p1 = await backends(echo_app("v1"))
    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    cfg = write_config(tmp_path, _routes(p1, p1, 100, 0), listen=listen, admin=admin,
                       extra="server: {reload_debounce: 50ms}\n")
    gw = gateway_procs(cfg)
    await asyncio.get_running_loop().run_in_executor(None, gw.wait_ready)
    with open(cfg, "a") as f:  # noqa: ASYNC230 - a writer that never finishes
        f.write("# ...\n")
        f.flush()
        gw.signal(signal.SIGHUP)

        async def waits() -> bool:
            return gw.output().count("config_not_settled") >= 2  # the watcher and SIGHUP

        await wait_until(waits, 10, 0.02, "both reloads waiting for the writer")
        async with ClientSession() as s, s.get(gw.admin + "/v1/status", headers=H) as r:
            config = (await r.json())["config"]
        assert "open for writing" in (config["waiting"] or ""), config
        t0 = time.monotonic()
        assert gw.stop() == 0
        assert time.monotonic() - t0 < 5, gw.output()[-2000:]
