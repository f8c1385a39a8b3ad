"""formscan: a multipart body watched as it streams for a second `model` part (sans-I/O),
fed in every split: the refusal comes before the bytes that end the second `model` part's
head, never on a body with one `model`, whatever bytes that look like a boundary it holds."""

from __future__ import annotations

import pytest

from gateway.dataplane.formpeek import MAX_PART_HEAD
from gateway.dataplane.formscan import PartScanner, scan_held, scanner
from gateway.dataplane.jsonpeek import Ambiguous, Unreadable
from tests.test_formpeek import FILE, MODEL, field, mp

pytestmark = pytest.mark.timeout(30)

# a file whose bytes hold near-boundaries: "\r\n--Xy", "--XyZ" without a CRLF before it,
# "\r\n--XY", CRLFCRLF, and a CR just before the real delimiter
NOISE = (b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
         + b"\x00\r\n--Xy\r\n\r\n x--XyZ\r\n\r\n--XY\r\n-" * 40 + b"\r")
assert b"\r\n--XyZ" not in NOISE
SECOND = mp(field(b'"model"', b"gpt-b"), NOISE, field(b'"model"', b"gpt-a"))
HEAD_END = SECOND.rindex(b'name="model"\r\n\r\n') + len(b'name="model"\r\n\r\n')


def feed_all(body: bytes, pieces: list[bytes]) -> int:
    """Feed `pieces` (which make `body`); the number of bytes fed whole before a refusal."""
    assert b"".join(pieces) == body
    scan = PartScanner(b"XyZ")
    fed = 0
    for piece in pieces:
        try:
            scan.feed(piece)
        except Unreadable:
            return fed
        fed += len(piece)
    return fed


def splits(body: bytes) -> list[list[bytes]]:
    return ([[body[:cut], body[cut:]] for cut in range(len(body) + 1)]
            + [[body[i:i + 1] for i in range(len(body))]]
            + [[body[i:i + 7] for i in range(0, len(body), 7)]])


def test_a_second_model_part_is_refused_before_its_head_is_forwarded_at_any_split() -> None:
    for pieces in splits(SECOND):
        fed = feed_all(SECOND, pieces)
        assert fed < HEAD_END, (fed, [len(p) for p in pieces][:3])  # its CRLFCRLF never sent
    with pytest.raises(Ambiguous, match="more than one 'model'"):
        PartScanner(b"XyZ").feed(SECOND)


@pytest.mark.parametrize("body", [
    mp(MODEL, NOISE),
    mp(NOISE, MODEL, FILE),
    mp(MODEL, FILE) + b"--XyZ\r\n" + MODEL + b"\r\n--XyZ--\r\n",  # (the epilogue: not read)
    b"a preamble\r\n" + mp(MODEL, NOISE),
    b"\r\n" + mp(MODEL),
    mp(),  # (no part: "--XyZ--")
    mp(MODEL, field(b'"e"', b""), field(b'"f"', b"x--XyZ\r\n-\n--XyY"), field(b'"g"', b"")),
])
def test_a_body_with_one_model_part_passes_at_every_split(body: bytes) -> None:
    for pieces in splits(body):
        assert feed_all(body, pieces) == len(body)
    scan = PartScanner(b"XyZ")
    scan.feed(body)
    assert scan.done


@pytest.mark.parametrize(("body", "match"), [
    (mp(MODEL, NOISE, field(b'"Model"', b"gpt-a")), "like 'model'"),
    (mp(MODEL, NOISE, field(b'"/model"', b"gpt-a")), "like 'model'"),  # aiohttp: model
    (mp(MODEL, NOISE, field(b"\"x\"; name*=utf-8''model", b"gpt-a")), "name\\*="),
    (mp(MODEL, NOISE, b"Content-Disposition: form-data;\n name=model\r\n\r\nx"), "bare CR"),
    (mp(MODEL, NOISE, field(b'"f"', b"x", b"X-Pad: " + b"a" * MAX_PART_HEAD + b"\r\n")),
     "longer than"),
    (mp(MODEL, NOISE).replace(b"\r\n--XyZ--", b"\r\n--XyZ \r\n"), "other bytes"),  # padding
    (mp(MODEL, NOISE, field(b'"f"', b"x", b"Content-Type: multipart/mixed\r\n")),
     "itself multipart"),
    (b"x--XyZ\r\n" + mp(MODEL), "preamble"),  # aiohttp: a line "x--XyZ" is not a boundary
    (b"--XyZ \r\n\r\n" + mp(MODEL), "other bytes"),  # aiohttp strips it: the first boundary
    (b"--XyZ\n" + mp(MODEL), "other bytes"),
    (b"--XyZ--x\r\n" + mp(MODEL), "close delimiter"),  # aiohttp: preamble, then parts
    (mp(MODEL, NOISE)[:-2] + b"--\r\n" + mp(MODEL), "close delimiter"),
    (mp(MODEL, NOISE + b"x\n--XyZ\r\n" + field(b'"model"', b"gpt-b")), "bare CR"),  # Werkzeug
    (mp(MODEL, NOISE + b"x\r--XyZ\r\n" + field(b'"model"', b"gpt-b")), "bare CR"),
    (mp(MODEL, field(b'"f"', b"--XyZ\r\n" + field(b'"model"', b"gpt-b"))), "bare CR"),
])
def test_a_head_read_two_ways_after_the_window_is_refused_at_every_split(
        body: bytes, match: str) -> None:
    with pytest.raises(Unreadable, match=match) as exc:
        PartScanner(b"XyZ").feed(body)
    assert "'model'" in str(exc.value)
    for pieces in splits(body)[::13]:
        assert feed_all(body, pieces) < len(body)


def test_only_a_multipart_body_is_scanned() -> None:
    assert scanner({"content-type": "application/x-www-form-urlencoded"}) is None
    assert scanner({"content-type": "application/json"}) is None
    assert scanner({"content-type": "multipart/form-data; boundary=a; boundary=b"}) is None
    assert scanner({"content-type": "multipart/form-data; boundary=XyZ"}) is not None
    with pytest.raises(Ambiguous):
        scan_held({"content-type": "multipart/form-data; boundary=XyZ"}, SECOND)
    scan_held({"content-type": "application/json"}, SECOND)  # (not a form: not scanned)


def test_a_head_of_the_longest_length_passes_and_one_byte_more_is_refused() -> None:
    def body(pad: int) -> bytes:
        head = b'Content-Disposition: form-data; name="f"\r\nX-Pad: '
        return mp(MODEL, head + b"a" * (pad - len(head)) + b"\r\n\r\nx")

    longest, over = body(MAX_PART_HEAD), body(MAX_PART_HEAD + 1)
    for pieces in splits(longest)[::97]:
        assert feed_all(longest, pieces) == len(longest)
    for pieces in splits(over)[::97]:
        assert feed_all(over, pieces) < len(over)


@pytest.mark.parametrize("body", [
    mp(MODEL, NOISE),
    mp(MODEL, FILE) + b"an epilogue",
    mp(MODEL, NOISE)[:-2],  # the close delimiter at the very end, without its CRLF
])
def test_a_closed_form_finishes_at_every_split(body: bytes) -> None:
    for pieces in splits(body)[::5]:
        scan = PartScanner(b"XyZ")
        for piece in pieces:
            scan.feed(piece)
        scan.finish()


@pytest.mark.parametrize(("body", "where"), [
    (mp(MODEL, NOISE)[:-len(b"\r\n--XyZ--\r\n")], "before its close delimiter"),
    (mp(MODEL, NOISE)[:-len(b"--\r\n")], "before its close delimiter"),  # a boundary line
    (mp(MODEL, NOISE)[:-len(b"-\r\n")], "before its close delimiter"),
    (mp(MODEL, NOISE)[:-len(b"--\r\n")] + b"\r\nContent-Disposition: form-da",
     "inside a part's head"),
])
def test_a_form_that_never_closes_is_refused_when_the_body_ends(body: bytes,
                                                                where: str) -> None:
    """Starlette and aiohttp refuse it, Werkzeug reads it as an empty form: its end is
    judged when the body ends (the sender holds the last `tail` bytes until then)."""
    for pieces in splits(body)[::5]:
        scan = PartScanner(b"XyZ")
        for piece in pieces:
            scan.feed(piece)
        with pytest.raises(Unreadable, match=where):
            scan.finish()
    with pytest.raises(Unreadable, match=where):
        scan_held({"content-type": "multipart/form-data; boundary=XyZ"}, body)


def test_the_sender_holds_the_last_bytes_until_the_form_is_closed() -> None:
    """`send` passes on all but the last len("\\r\\n--XyZ--\\r\\n") bytes; `end` the rest
    once the form is known closed, or raises, nothing of the end sent."""
    tail = len(b"\r\n--XyZ--\r\n")
    for body in (mp(MODEL, NOISE), mp(MODEL, FILE) + b"an epilogue"):
        for pieces in splits(body)[::5]:
            scan = PartScanner(b"XyZ")
            out = b"".join(scan.send(p) for p in pieces)
            assert body.startswith(out) and len(out) >= len(body) - tail
            assert out + scan.end() == body
    body = mp(MODEL, NOISE)[:-tail]
    for pieces in splits(body)[::5]:
        scan = PartScanner(b"XyZ")
        out = b"".join(scan.send(p) for p in pieces)
        assert len(out) <= len(body) - tail  # the last bytes were never sent
        with pytest.raises(Unreadable, match="before its close delimiter"):
            scan.end()
