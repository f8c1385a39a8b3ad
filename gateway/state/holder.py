"""What the state layer is handed of the routing snapshot's holder: a narrow `Protocol`.

The sync loop, writes and the fleet read the held document and config, adopt a newer
document, open the routes once the kill state is known, and trip or clear fail-closed.
`control/table.TableHolder` implements it; the state layer never imports `control/`
(arrows point down: control uses state, not the other way). Imports the domain only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gateway.configfile import LoadedConfig
    from gateway.domain.statedoc import KillFlag, StateDoc

__all__ = ["Holder"]


class Holder(Protocol):
    @property
    def doc(self) -> StateDoc: ...
    @property
    def loaded(self) -> LoadedConfig: ...
    @property
    def fail_closed(self) -> bool: ...

    def apply_doc(self, doc: StateDoc) -> bool:
        """Adopt `doc` if newer than the held one; True when it was adopted."""

    def state_loaded(self) -> bool:
        """The kill state is known: open the routes (once)."""

    def set_fail_closed(self, on: bool) -> None:
        """Trip (True) or clear (False) fail-closed."""

    def set_local_kills(self, local: Mapping[str, KillFlag]) -> None:
        """Enforce these emergency local kills beside the document's (localmerge.py)."""
