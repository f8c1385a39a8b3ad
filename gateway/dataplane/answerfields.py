"""What each field of a backend's answer is to the exchange that parses it (its kind).

Owns the kinds (forwarded as it came, the Date, the Content-Type, framing that is dropped,
dropped, one only `headers.response_head` handles, a Location to rewrite) and the bounded
table of them learned per spelling, with the rules of fieldrules.py. Pure; no I/O.
"""

from __future__ import annotations

from gateway.dataplane.fieldrules import LEARNED_MAX, RESPONSE_DROP, RESPONSE_NAMES, learn

__all__ = [
    "ANSWER_FIELDS",
    "CODING",
    "DATED",
    "DROPPED",
    "FORWARD",
    "GENERAL",
    "LENGTH",
    "LOCATED",
    "TYPED",
    "answer_field",
]

# What an answer's field is to the exchange that receives it (`answer_field`): forwarded as
# it came (plain, the Date, the Content-Type), framing that is dropped (Content-Length,
# Transfer-Encoding), dropped, or one that only `response_head` handles (Connection, whose
# tokens name fields to drop, and Via, which ours extends). The exchange classifies each
# field as it is parsed and keeps the forwarded ones as head parts, so the common answer's
# head (`headers.answer_head`) is a join, not a second pass over the fields.
FORWARD, DATED, TYPED, LENGTH, CODING, DROPPED, GENERAL, LOCATED = range(8)
ANSWER_FIELDS: dict[bytes, int] = {}  # a field name as a backend spells it -> its kind


def answer_field(name: bytes) -> int:
    """The kind of an answer's field named `name` (learned once per spelling, bounded)."""
    low = name.lower()
    if low == b"content-length":
        kind = LENGTH
    elif low == b"transfer-encoding":
        kind = CODING
    elif low in (b"location", b"content-location"):
        kind = LOCATED  # (forwarded, with the backend's own origin taken out)
    elif low == b"proxy-connection":
        # dropped, but llhttp reads it as a Connection field: general, so that its `close`
        # is looked at (`on_headers_complete`) and its head never remembered (answerheads)
        kind = GENERAL
    else:
        kind = (FORWARD, DROPPED, GENERAL, GENERAL, DATED, TYPED)[
            learn(name, RESPONSE_DROP, RESPONSE_NAMES)]
    if len(ANSWER_FIELDS) >= LEARNED_MAX:
        ANSWER_FIELDS.clear()
    ANSWER_FIELDS[name] = kind
    return kind

