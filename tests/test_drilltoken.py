"""Drill fault tokens (domain/drilltoken.py, pure): forged, altered, expired and replayed
tokens inject nothing."""

from __future__ import annotations

import base64
import json

from gateway.domain.drilltoken import Claims, derive_key, fault_version, mint, verify
from gateway.domain.statedoc import DrillRecord, StateDoc

KEY = derive_key(b"k" * 32)
CLAIMS = Claims("d-1", "iris-drill", "v2", "nonce-1", 1000.0)


def doc_with(fault: dict | None, restored: bool = False, route: str = "iris-drill",
             nonce: str = "nonce-1") -> StateDoc:
    rec = DrillRecord("d-1", "failover", route, "v2", "alice", "t", 2000.0, {},
                      fault=fault, restored=restored, nonce=nonce)
    return StateDoc(drills={"d-1": rec})


FAULT = {"version": "v2", "expires": 1000.0}


def test_a_valid_token_meets_its_fault() -> None:
    tok = mint(KEY, CLAIMS)
    got = verify(KEY, tok, 10.0)
    assert got == CLAIMS
    assert fault_version(got, doc_with(FAULT), "iris-drill", 10.0) == "v2"


def test_forged_and_altered_tokens_do_not_verify() -> None:
    tok = mint(KEY, CLAIMS)
    assert verify(derive_key(b"x" * 32), tok, 10.0) is None  # another key
    assert verify(KEY, mint(derive_key(b"x" * 32), CLAIMS), 10.0) is None
    signed, _, mac = tok.rpartition(".")
    payload = json.loads(base64.urlsafe_b64decode(signed[5:] + "=="))
    payload["r"] = "iris"  # the production route, same signature
    other = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    assert verify(KEY, f"kgd1.{other}.{mac}", 10.0) is None
    for bad in ("", "kgd1.", "kgd1..", tok + "x", tok[:-1], "x" * 600, "kgd1.é.x",
                tok.replace("kgd1", "kgd2")):
        assert verify(KEY, bad, 10.0) is None, bad


def test_expired_tokens_and_faults_inject_nothing() -> None:
    tok = mint(KEY, CLAIMS)
    assert verify(KEY, tok, 1000.0) is None
    claims = verify(KEY, tok, 10.0)
    assert claims is not None
    assert fault_version(claims, doc_with(FAULT), "iris-drill", 1000.0) is None
    short = {**FAULT, "expires": 5.0}
    assert fault_version(claims, doc_with(short), "iris-drill", 6.0) is None


def test_replayed_tokens_match_no_fault() -> None:
    claims = verify(KEY, mint(KEY, CLAIMS), 10.0)
    assert claims is not None
    assert fault_version(claims, StateDoc(), "iris-drill", 10.0) is None  # drill ended
    assert fault_version(claims, doc_with(None), "iris-drill", 10.0) is None  # fault cleared
    assert fault_version(claims, doc_with(FAULT, restored=True), "iris-drill", 10.0) is None
    # another drill that reused the id (a store restored from a backup): another nonce
    assert fault_version(claims, doc_with(FAULT, nonce="nonce-2"), "iris-drill", 10.0) is None
    assert fault_version(claims, doc_with(FAULT, nonce=""), "iris-drill", 10.0) is None
    assert fault_version(claims, doc_with(FAULT), "iris", 10.0) is None  # another route
    assert fault_version(claims, doc_with({**FAULT, "version": "v1"}), "iris-drill",
                         10.0) is None
