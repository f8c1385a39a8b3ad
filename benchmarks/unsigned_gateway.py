"""killgate with state signing switched off: the "before" side of the signing benchmark.

Only for `benchmarks/killswitch.py --signing`: the same build as `killgate serve`, but the
state keyring is replaced by one without a key, so no document, push or ack is signed or
verified (the product itself refuses to run a redis store without a key). Everything
else — the store, the sync loop, the receipts — is the code under test.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gateway.state.signing as signing
from gateway.cli.main import main


def _no_keys(cfg: Any, resolve: Any) -> signing.Keyring:
    return signing.Keyring(None)


signing.signing_keyring = _no_keys  # type: ignore[assignment]

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
