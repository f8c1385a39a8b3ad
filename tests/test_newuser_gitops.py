"""The README's "Config changes (GitOps)" section followed as a new ML platform engineer
would (revnewuser9): the config file is a git working tree's, changed by commits and merges.
A merge that stopped on a conflict leaves git's markers in the file; the gateway keeps the
running config, and what `killgate check`, `serve` and `/v1/status` say names the conflict
(before: "could not find expected ':'" at the `=======` line, which reads as a YAML typo).
And README's GitOps block (check and diff in CI, `git pull` on the gateway's host, status),
which it lacked (a new user had to work out the workflow), run as written.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.backends import echo_app
from tests.conftest import ROOT, admin_token, running_gateway, wait_until, wait_until_sync, write_config
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(60)

_CONFLICT = "unresolved git merge conflict"
SHELL = f'killgate() {{ {sys.executable!r} -m gateway "$@"; }}\n'


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], check=False, capture_output=True, text=True,
                          timeout=30).stdout


def _conflicted(repo: Path, cfg: Path) -> None:
    """Two branches set the canary's weight differently; merging them stops on a conflict,
    and git writes its markers into the file (in place, as `git merge` does)."""
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", cfg.name)
    _git(repo, "commit", "-qm", "init")
    text = cfg.read_text()
    _git(repo, "checkout", "-qb", "canary-20")
    cfg.write_text(text.replace("weight: 10", "weight: 20"))
    _git(repo, "commit", "-qam", "canary 20")
    _git(repo, "checkout", "-q", "main")
    cfg.write_text(text.replace("weight: 10", "weight: 50"))
    _git(repo, "commit", "-qam", "canary 50")
    _git(repo, "merge", "canary-20")  # exits 1: CONFLICT
    cfg.chmod(0o600)
    assert "<<<<<<< " in cfg.read_text()


async def test_a_merge_conflict_is_named_and_changes_nothing(tmp_path: Path, backends) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 90}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 10}}
""")
    token = admin_token("killgate:read", "t", 3600)
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        async def status() -> dict:
            async with s.get(g.admin + "/v1/status",
                             headers={"Authorization": f"Bearer {token}"}) as r:
                return json.loads(await r.read())

        before = (await status())["config"]["digest"]
        _conflicted(tmp_path, cfg)

        async def refused() -> bool:
            return bool((await status())["config"].get("last_error"))

        await wait_until(refused, timeout=10)
        st = await status()
        res = await acli("check", str(cfg))
    line = next(i for i, x in enumerate(cfg.read_text().splitlines(), 1)
                if x.startswith("<<<<<<< "))
    assert st["config"]["digest"] == before  # nothing changed
    weights = {n: v["configured_weight"] for n, v in st["routes"]["iris"]["versions"].items()}
    assert weights == {"v1": 90, "v2": 10}
    assert _CONFLICT in json.dumps(st["config"]["last_error"]), st["config"]["last_error"]
    assert res.returncode == 1 and _CONFLICT in res.stderr, res.stderr
    assert f"line {line}" in res.stderr, res.stderr  # (the `<<<<<<<`, not where YAML tripped)


def _block() -> list[str]:
    """README's GitOps shell block: its commands, one a line (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "git pull" in b)
    return [ln.split("#")[0].strip() for ln in block.splitlines()
            if ln.split("#")[0].strip()]


async def test_the_readmes_gitops_block_works_as_written(tmp_path: Path, backends) -> None:
    """CI checks and diffs a pull request's file; the gateway's host pulls it; status shows
    it live. Each line run as written (`killgate` is this tree's), in real git clones."""
    check, diff, pull, status = _block()
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    origin = tmp_path / "origin"
    origin.mkdir()
    cfg = write_config(origin, f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 90}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 10}}
""")
    cfg.chmod(0o644)
    _git(origin, "init", "-q", "-b", "main")
    _git(origin, "add", cfg.name)
    _git(origin, "commit", "-qm", "90/10")
    for clone in ("ci", "gw"):
        _git(tmp_path, "clone", "-q", str(origin), clone)
    ci = tmp_path / "ci"
    (ci / cfg.name).write_text(cfg.read_text().replace("weight: 10", "weight: 30"))
    _git(ci, "commit", "-qam", "canary 30")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILLGATE_")}
    env["PYTHONPATH"] = str(ROOT)

    def sh(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", SHELL + line], cwd=cwd, env=env, text=True,
                              capture_output=True, timeout=60, check=False)

    res = await asyncio.to_thread(sh, check, ci)
    assert res.returncode == 0 and "killgate.yaml: ok" in res.stdout, res.stdout + res.stderr
    res = await asyncio.to_thread(sh, diff, ci)
    assert res.returncode == 2 and re.search(r"weight v2\s+10\s+30", res.stdout), \
        res.stdout + res.stderr
    _git(ci, "push", "-q", "origin", "HEAD:refs/heads/canary")
    _git(origin, "merge", "-q", "--ff-only", "canary")
    gw = tmp_path / "gw" / cfg.name
    async with running_gateway(gw) as g:
        env["KILLGATE_ADMIN_URL"] = g.admin
        env["KILLGATE_TOKEN"] = admin_token("killgate:read", "t", 3600)
        res = await asyncio.to_thread(sh, pull, gw.parent)
        assert res.returncode == 0, res.stderr

        def live() -> bool:
            return bool(re.search(r"iris\s+v2\s+30\s", sh(status, gw.parent).stdout))

        await asyncio.to_thread(wait_until_sync, live, 15, what="the pulled weights live")
