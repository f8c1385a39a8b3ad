"""Versions are immutable by artifact (a name must not point at another build): a reload
changing the artifact of a version name the gateway knows is refused. The check read only
the identities recorded in the state store; a reload made while the store could not be
written (an outage: `config_record_skipped`) left its versions unrecorded, so the next file
could give the running version name another artifact and was applied (and recorded as if it
were the first), while `killgate diff` against that gateway said it would be refused
(hostile GitOps review). The running config's own artifacts now count as known."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, wait_until, write_config
from tests.test_kill_after_routing_reload import _route
from tests.test_killswitch import redis_state
from tests.test_reload import atomic_write

pytestmark = pytest.mark.timeout(30)


async def test_a_version_recorded_nowhere_keeps_its_artifact_while_it_runs(
        tmp_path: Path, backends, redis_server: RedisServer) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_state(redis_server, tmp_path, command_timeout="100ms")
    cfg = write_config(tmp_path, _route("iris", {"v1": (p1, 100)}), state=state,
                       extra="server: {reload_debounce: 50ms}\n")
    with_v2 = write_config(tmp_path, _route("iris", {"v1": (p1, 100), "v2": (p2, 0)}),
                           state=state, extra="server: {reload_debounce: 50ms}\n",
                           name="next.yaml").read_text().replace(
        f'{p2}", weight: 0}}', f'{p2}", weight: 0, artifact: "sha256:aaaa"}}')
    assert "sha256:aaaa" in with_v2
    async with running_gateway(cfg) as g:
        redis_server.kill()  # the store is down while v2 is deployed: nothing recorded
        try:
            atomic_write(cfg, with_v2)
            await wait_until(lambda: g.gw.metrics.get("killgate_config_reloads_total") == 1, 10,
                             what="the reload adding v2")
            assert "v2" not in g.gw.holder.doc.identities.get("iris", {})
            running = g.gw.loaded.digest
            atomic_write(cfg, with_v2.replace("sha256:aaaa", "sha256:bbbb"))
            await wait_until(lambda: g.gw.watcher.outcome.last_error is not None
                             or g.gw.loaded.digest != running, 10, what="the second reload")
            # before the fix: applied, v2 now names another build
            assert g.gw.loaded.digest == running
            err = g.gw.watcher.outcome.last_error
            assert "routes[0].versions[1].artifact" in err and "sha256:aaaa" in err, err
        finally:
            redis_server.restart()  # (the stop's last writes)
