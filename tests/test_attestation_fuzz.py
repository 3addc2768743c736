"""Property tests: the document parser and verify() never fail with anything but a typed answer."""

from __future__ import annotations

import datetime as dt

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from core.attest.document import KEYS
from core.attest.verify import AttestationError, parse_document, verify
from tests import conftest

_SAMPLE = conftest.TESTDATA / "attestation" / "evervault-beta-nondebug-2022-10-13.bin"
SAMPLE = _SAMPLE.read_bytes() if _SAMPLE.exists() else b"\x84\x44\xa1\x01\x38\x22\xa0\x40\x40"
SAMPLE_AT = dt.datetime.fromtimestamp(1665651482136 / 1000, dt.UTC)

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=60) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.integers(0, 40) | st.text(max_size=5), inner,
                                                                max_size=4),
    max_leaves=10,
)


def _wrap(payload: bytes, tagged: bool) -> bytes:
    body = [bytes.fromhex("a1013822"), {}, payload, b"\x00" * 96]
    return cbor2.dumps(cbor2.CBORTag(18, body) if tagged else body)


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:  # mutate a genuine document: flips, cuts and insertions
        data = bytearray(SAMPLE)
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, len(data) - 1))
            action = draw(st.integers(0, 2))
            if action == 0:
                data[pos] ^= draw(st.integers(1, 255))
            elif action == 1:
                del data[pos:pos + draw(st.integers(1, 50))]
            else:
                data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
            if not data:
                break
        return bytes(data)
    # a COSE envelope around a payload map with the real keys and arbitrary values
    payload = {k: draw(_values) for k in draw(st.lists(st.sampled_from(KEYS), unique=True))}
    return _wrap(cbor2.dumps(payload), tagged=kind == 3)


@settings(max_examples=400, deadline=None)
@given(documents())
def test_parser_raises_only_typed_errors(data: bytes) -> None:
    try:
        doc = parse_document(data)
    except AttestationError as exc:
        assert exc.where  # every failure names the field
        return
    assert 1 <= len(doc.cabundle) <= 8 and doc.timestamp > 0


@settings(max_examples=150, deadline=None)
@given(documents())
def test_verify_never_raises_and_never_passes_garbage(data: bytes) -> None:
    report = verify(data, at=SAMPLE_AT)
    assert report.checks and report.checks[0].name == "structure"
    if data != SAMPLE:
        # any change to a genuine document must be caught by some check
        assert not report.ok


def test_hostile_cbor_is_a_structure_failure() -> None:
    hostile = [
        b"\x81" * 16000 + b"\x00",  # nesting far past any real document
        b"\x9f" * 16000,  # unterminated indefinite arrays
        b"\x5b" + b"\xff" * 8,  # a byte string claiming 2^64-1 bytes
        b"\x9b" + b"\x7f" * 8,  # an array claiming 2^63 items
    ]
    for payload in hostile:
        for doc in (payload, _wrap(payload, tagged=False)):
            report = verify(doc, at=SAMPLE_AT)
            assert not report.ok and report.checks[0].name == "structure" and report.checks[0].ok is False


def test_unknown_curve_oid_in_leaf_is_a_failed_check_not_a_crash() -> None:
    """Found by hypothesis: 1.3.132.0.34 (P-384) turned into 1.2.132.0.34 made public_key() raise."""
    from core.attest.verify import verify
    from tests.conftest import testdata

    raw = testdata("attestation", "evervault-beta-nondebug-2022-10-13.bin").read_bytes()
    p384 = bytes.fromhex("06052b81040022")
    assert p384 in raw
    mutated = raw.replace(p384, bytes.fromhex("06052a81040022"), 1)
    report = verify(mutated)
    assert not report.ok
    failed = {c.name for c in report.checks if c.ok is False}
    assert "signature" in failed
