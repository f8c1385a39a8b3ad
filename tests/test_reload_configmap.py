"""Config reload from a Kubernetes ConfigMap volume (issue 15 item 3, RELIABILITY rows 22-25).

The kubelet never rewrites a mounted file: it writes a new timestamped folder and swaps the
`..data` symlink (tests/configmap.py does exactly that on a real filesystem). The gateway
must apply the update once the swap happens and never act on an intermediate state: a
half-written file in the new folder, a complete folder not yet linked, a `..data_tmp` link
not yet renamed, or the old folder disappearing under a reader.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import ClientSession

from gateway.admin.tokens import mint
from tests.backends import echo_app
from tests.configmap import ConfigMapVolume
from tests.conftest import SECRET, running_gateway, two_versions, wait_until, write_config
from tests.test_reload import PATH, Load


def _config_text(tmp: Path, p1: int, p2: int, w1: int, w2: int, extra: str = "") -> str:
    """A config whose state files live outside the ConfigMap (it is read-only in a pod)."""
    var = tmp / "var"
    var.mkdir(exist_ok=True)
    src = write_config(var, two_versions(p1, p2, w1, w2),
                       extra="server: {reload_debounce: 50ms}\n" + extra, name="src.yaml")
    return src.read_text()


def _quiet(g) -> bool:  # type: ignore[no-untyped-def]
    return (g.gw.metrics.get("killgate_config_reload_rejected_total") == 0
            and g.gw.watcher.outcome.last_error is None)


async def test_symlink_swap_is_applied_and_intermediate_states_never_are(
        tmp_path: Path, backends) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    old = _config_text(tmp_path, p1, p2, 100, 0)
    new = _config_text(tmp_path, p1, p2, 0, 100)
    vol = ConfigMapVolume(tmp_path / "cm", {"killgate.yaml": old})
    async with running_gateway(vol.path("killgate.yaml")) as g:
        assert g.gw.loaded.path == vol.path("killgate.yaml")  # the link, not its target
        load = Load(g.url + PATH)
        load.start()
        await wait_until(lambda: len(load.results) > 50, 5, what="warm load")
        swapped_at = None
        steps = vol.update({"killgate.yaml": new}, split=len(new) // 2)
        for step in steps:
            if step == "..data swapped":
                swapped_at = len(load.results)
                break
            # every intermediate state: long enough for the watcher and its debounce
            # (inotify on the folder) to have acted, had it read anything
            await asyncio.sleep(0.5)
            assert g.gw.metrics.get("killgate_config_reloads_total") == 0, step
            assert _quiet(g), (step, g.gw.watcher.outcome.last_error)
        await wait_until(lambda: g.gw.metrics.get("killgate_config_reloads_total") == 1, 5,
                         what="the swapped config applied")
        assert next(steps) == "old folder removed"
        # the old folder is gone now; the watcher still follows the link (the 1 s stat poll
        # has run at least once more), and nothing was rejected
        await asyncio.sleep(1.3)
        assert _quiet(g), g.gw.watcher.outcome.last_error
        assert g.gw.metrics.get("killgate_config_reloads_total") == 1
        await load.stop()
        assert load.failures() == []
        versions = [r[2] for r in load.results]
        assert swapped_at is not None and set(versions[:swapped_at]) == {"v1"}
        assert versions[-1] == "v2"


async def test_a_second_update_after_the_first_folder_is_gone(tmp_path: Path, backends) -> None:
    """The bug this guards against: following the link once at start and watching the
    timestamped folder it led to, which the first update deletes."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    texts = [_config_text(tmp_path, p1, p2, w, 100 - w) for w in (100, 0, 100, 50)]
    vol = ConfigMapVolume(tmp_path / "cm", {"killgate.yaml": texts[0]})
    async with running_gateway(vol.path("killgate.yaml")) as g:
        for i, text in enumerate(texts[1:], start=1):
            for _ in vol.update({"killgate.yaml": text}):
                pass
            await wait_until(lambda i=i: g.gw.metrics.get("killgate_config_reloads_total") == i,
                             5, what=f"update {i} applied")
            assert _quiet(g), g.gw.watcher.outcome.last_error
        assert g.gw.loaded.config.routes[0].versions[1].weight == 50


async def test_rapid_updates_end_on_the_last_and_reject_nothing(tmp_path: Path,
                                                                backends) -> None:
    """Swaps back to back (the old folder removed right after each): a read that races a
    removal must not count as a broken file."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    vol = ConfigMapVolume(tmp_path / "cm", {"killgate.yaml": _config_text(tmp_path, p1, p2, 50, 50)})
    async with running_gateway(vol.path("killgate.yaml")) as g:
        load = Load(g.url + PATH)
        load.start()
        for w in range(1, 31):
            for _ in vol.update({"killgate.yaml": _config_text(tmp_path, p1, p2, w, 100 - w)}):
                pass
            await asyncio.sleep(0.02)
        await wait_until(lambda: g.gw.loaded.config.routes[0].versions[0].weight == 30, 5,
                         what="the last update applied")
        await asyncio.sleep(1.2)  # one more stat poll
        await load.stop()
        assert _quiet(g), g.gw.watcher.outcome.last_error
        assert load.failures() == []


async def test_files_named_relative_to_the_config_follow_the_update(tmp_path: Path,
                                                                    backends) -> None:
    """A key shipped in the same ConfigMap (`hs256_secret_file: jwt.secret`) is read through
    the mount folder, so a rotated key in an update takes effect with it."""
    p1 = await backends(echo_app("v1"))
    new_secret = "rotated-secret-0123456789-abcdefghijklmnop"
    base = _config_text(tmp_path, p1, p1, 100, 0).replace(
        "hs256_secret_env: KILLGATE_TEST_SECRET", "hs256_secret_file: jwt.secret")
    # (a key file must not be readable by other users: defaultMode 0400, as the README says)
    vol = ConfigMapVolume(tmp_path / "cm", {"killgate.yaml": base, "jwt.secret": SECRET},
                          mode=0o400)
    async with running_gateway(vol.path("killgate.yaml")) as g, ClientSession() as s:
        async def status_with(secret: str) -> int:
            tok = mint(secret, "ops", "killgate:read", 60, "killgate", "killgate-admin")
            async with s.get(g.admin + "/v1/status",
                             headers={"Authorization": f"Bearer {tok}"}) as r:
                return r.status

        assert await status_with(SECRET) == 200
        # (with the auth settings changed too; the key alone: test_admin_key_rotation.py)
        rotated = base.replace("hs256_secret_file: jwt.secret",
                               "hs256_secret_file: jwt.secret\n    leeway: 5s")
        for _ in vol.update({"killgate.yaml": rotated, "jwt.secret": new_secret}):
            pass
        await wait_until(lambda: g.gw.metrics.get("killgate_config_reloads_total") == 1, 5,
                         what="the update applied")
        assert _quiet(g), g.gw.watcher.outcome.last_error
        assert await status_with(new_secret) == 200
        assert await status_with(SECRET) == 401
