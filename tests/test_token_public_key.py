"""`killgate token -c FILE` on a config whose admin tokens are public-key signed (EdDSA
here) says that `killgate token` cannot mint them, and where they come from; it said
"no secret: set KILLGATE_JWT_SECRET", and a token minted after doing so was refused 401 by
the gateway (HS256 is not among its algorithms). With a scoped key it still mints.
Found by the new-user review (revnewuser2).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import two_versions, write_config
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(30)
DRILL_SECRET = "drill-secret-0123456789-abcdefghijklmnop"


async def test_token_on_a_public_key_config_says_it_cannot_mint_there(tmp_path: Path) -> None:
    pub = tmp_path / "ed.pub"
    pub.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    cfg = write_config(tmp_path, two_versions(1, 2))
    cfg.write_text(cfg.read_text().replace(
        "    hs256_secret_env: KILLGATE_TEST_SECRET\n",
        f"    algorithms: [EdDSA]\n    public_key_file: {pub}\n"
        "    scoped_keys:\n      - {name: drills, hs256_secret_env: KILLGATE_TEST_DRILL, "
        "max_scopes: [killgate:drill, killgate:read]}\n"))
    res = await acli("token", "-c", str(cfg), "--subject", "a", "--scope", "killgate:read",
                     env={"KILLGATE_JWT_SECRET": "s" * 40})
    assert res.returncode == 1 and not res.stdout, res
    assert (f"{cfg} takes tokens signed with EdDSA (admin.auth.public_key_file), not HS256"
            in res.stderr), res.stderr
    assert "KILLGATE_JWT_SECRET" not in res.stderr, res.stderr
    res = await acli("token", "-c", str(cfg), "--key", "drills", "--subject", "a",
                     "--scope", "killgate:read", env={"KILLGATE_TEST_DRILL": DRILL_SECRET})
    assert res.returncode == 0 and res.stdout.count(".") == 2, res
