"""The admin client commands of the CLI (status, kill, unkill, ...): HTTP calls to /v1."""

from __future__ import annotations

import argparse

__all__ = ["add_client_commands"]


def add_client_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    return None
