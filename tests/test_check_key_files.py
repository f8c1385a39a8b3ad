"""`killgate check` and `killgate token` on a config whose admin key file is missing: the
message names the setting and the file and says what is wrong in words (it was Python's
`[Errno 2] No such file or directory: '...'`), and `check` goes on to say every other
problem (it stopped at the admin key, so a missing state signing key was found only at
the next run: CONTRACT §1, "one line per problem").

Found by the new-user review (revnewuser2), running `killgate check` on a config with a
typo in `hs256_secret_file` and a state key file left readable by others.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import two_versions, write_config
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(30)


def _config(tmp_path: Path) -> tuple[Path, Path]:
    absent = tmp_path / "secrets" / "jwt"
    state_key = tmp_path / "state.key"
    state_key.write_text("k" * 64 + "\n")
    state_key.chmod(0o644)  # readable by others: an error of its own
    cfg = write_config(tmp_path, two_versions(1, 2), state=(
        "state:\n  backend: redis\n  url: redis://127.0.0.1:1/0\n"
        f"  signing_key_file: {state_key}\n"))
    cfg.write_text(cfg.read_text().replace("hs256_secret_env: KILLGATE_TEST_SECRET",
                                           f"hs256_secret_file: {absent}"))
    return cfg, absent


async def test_check_names_a_missing_admin_key_file_and_every_other_problem(
        tmp_path: Path) -> None:
    cfg, absent = _config(tmp_path)
    res = await acli("check", str(cfg))
    assert res.returncode == 1 and not res.stdout, res
    lines = res.stderr.splitlines()
    assert (f"admin.auth: hs256_secret_file: cannot read {absent}: No such file or directory"
            in lines), res.stderr
    assert "Errno" not in res.stderr, res.stderr
    assert any(line.startswith("state.signing_key_file: ") and "chmod 600" in line
               for line in lines), res.stderr


async def test_token_names_a_missing_admin_key_file_in_words(tmp_path: Path) -> None:
    cfg, absent = _config(tmp_path)
    res = await acli("token", "--subject", "a", "--scope", "killgate:read", "-c", str(cfg))
    assert res.returncode == 1 and not res.stdout, res
    assert (f"cannot read the secret file {absent} that {cfg} names: No such file or "
            "directory") in res.stderr, res.stderr
    assert "Errno" not in res.stderr, res.stderr
