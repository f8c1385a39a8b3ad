"""The state document's version identities are bounded per route (domain/statedoc.py
MAX_IDENTITIES): found by review (revmerge16): one name per build grew the document with
every deploy, for ever, towards MAX_DOC_BYTES, where no instance can read the state (its
kills included); /v1/status `identities` grew with it. Pure."""

from __future__ import annotations

from gateway.domain.statedoc import MAX_IDENTITIES, Change, StateDoc, apply_change


def _seen(i: int) -> dict[str, dict[str, object]]:
    return {f"b{i:05d}": {"url": f"http://10.0.0.1:{9000 + i % 1000}",
                          "artifact": f"sha256:{i:064x}",
                          "time": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z"}}


def test_the_oldest_identities_of_a_route_go_past_the_bound() -> None:
    doc = StateDoc()
    for i in range(MAX_IDENTITIES + 5):
        doc = apply_change(doc, Change(identities={"iris": _seen(i)}))
    known = doc.identities["iris"]
    assert len(known) == MAX_IDENTITIES
    assert "b00000" not in known and "b00004" not in known and "b00005" in known
    assert f"b{MAX_IDENTITIES + 4:05d}" in known
    # the order a stored document's keys come back in does not matter: by the time recorded
    doc = StateDoc.from_json(doc.to_json())
    doc = apply_change(doc, Change(identities={"iris": _seen(MAX_IDENTITIES + 5)}))
    assert "b00005" not in doc.identities["iris"] and len(doc.identities["iris"]) == \
        MAX_IDENTITIES
