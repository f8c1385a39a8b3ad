"""auditpin.AnchoredLinks: the entries of a stream that are links of the chain back from
the anchored head (review revprefix). Pure: no store."""

from __future__ import annotations

from typing import Any

from gateway.domain.audit import GENESIS, AuditDraft, seal
from gateway.domain.auditpin import AnchoredLinks

KEY = ("k1", b"s" * 32)


def chain(n: int, reason: str) -> list[dict[str, Any]]:
    """`n` sealed events, newest first."""
    out, prev = [], GENESIS
    for i in range(n):
        ev = seal(AuditDraft("alice", "kill", {"route": f"r{i}"}, reason).as_event(), prev, KEY)
        out.append(ev)
        prev = ev["hash"]
    return out[::-1]


def test_the_chain_back_from_the_head_is_every_entry() -> None:
    mine = chain(5, "mine")
    assert AnchoredLinks(mine[0]["hash"]).links(mine) == [True] * 5
    assert AnchoredLinks(None).links(mine) == [False] * 5


def test_another_chains_genuine_events_and_entries_past_the_head_are_no_links() -> None:
    mine, theirs = chain(4, "mine"), chain(3, "theirs")
    # copies appended past the head (newest), and one between two of ours
    stream = [theirs[2], theirs[1], *mine[:2], theirs[0], *mine[2:]]
    got = AnchoredLinks(mine[0]["hash"]).links(stream)
    assert got == [False, False, True, True, False, True, True]


def test_an_entry_naming_a_links_hash_with_other_content_is_none() -> None:
    """An edited copy that keeps a real event's hash (and MAC: over the hash only) but
    continues another chain does not divert the walk, also once the link is known."""
    mine, theirs = chain(3, "mine"), chain(2, "theirs")
    forged = {**mine[1], "prev_hash": theirs[0]["hash"]}
    stream = [mine[0], forged, *theirs, mine[1], mine[2]]
    links = AnchoredLinks(mine[0]["hash"])
    assert links.links(stream) == [True, False, False, False, True, True]
    again = AnchoredLinks(mine[0]["hash"], links.known)
    assert again.links(stream) == [True, False, False, False, True, True]
    # the pages of one walk continue each other
    paged = AnchoredLinks(mine[0]["hash"])
    assert paged.links(stream[:2]) + paged.links(stream[2:]) == \
        [True, False, False, False, True, True]
