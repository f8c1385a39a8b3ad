"""`Sync` (state/sync.py) is its mixins put together (reseed.py, staleness.py, writes.py,
startup.py, syncreads.py, syncpushes.py), each declaring stand-ins (`raise
NotImplementedError`) for the methods it uses of the others. A stand-in earlier in the
method resolution order than the real method shadows it: a push, a write or a re-seed
would raise in the sync loop. Pure: no store, no loop."""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest

from gateway.state.sync import Sync

pytestmark = pytest.mark.timeout(10)


def _stand_in(fn: object) -> bool:
    """A function whose body (its docstring aside) is `raise NotImplementedError`."""
    try:
        src = textwrap.dedent(inspect.getsource(fn))  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False
    body = ast.parse(src).body[0].body  # type: ignore[attr-defined]
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return (len(body) == 1 and isinstance(body[0], ast.Raise)
            and "NotImplementedError" in ast.unparse(body[0]))


def test_every_method_of_sync_is_a_real_one_not_a_mixins_stand_in() -> None:
    stand_ins = set()
    for name, value in inspect.getmembers(Sync):
        fn = value.fget if isinstance(value, property) else value
        if inspect.isfunction(fn) and _stand_in(fn):
            owner = next(c for c in Sync.__mro__ if name in c.__dict__)
            stand_ins.add(f"{owner.__name__}.{name}")
    assert not stand_ins, f"a mixin's stand-in shadows the real method: {sorted(stand_ins)}"


def test_the_check_sees_a_stand_in() -> None:
    class Shadowed(Sync):
        def _apply(self, doc: object) -> bool:  # type: ignore[override]
            raise NotImplementedError

    assert _stand_in(Shadowed._apply) and not _stand_in(Sync._apply)
