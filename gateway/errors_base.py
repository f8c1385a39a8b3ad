"""The base of killgate's one exception tree (drawn in gateway/errors.py's docstring).

Owns KillgateError only, so that the areas of the tree (errors_store.py, errors_upstream.py)
and gateway/errors.py, which names them all, import down to it. Imports nothing.
"""

from __future__ import annotations

__all__ = ["KillgateError"]


class KillgateError(Exception):
    """Base of every error killgate raises on purpose."""
