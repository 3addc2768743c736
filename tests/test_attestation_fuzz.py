"""Property tests: the document parser and verify() answer typed, and what they accept holds every rule.

Beyond "no untyped exception": a parsed document satisfies every format rule of core.attest.document
(so no input slips past a rule), a refusal names a known rule and field, and a mutated genuine
document is never VERIFIED unless its signed parts (protected header, payload, signature) are
byte-for-byte the original's.
"""

from __future__ import annotations

import datetime as dt

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from core.attest.document import KEYS, MAX_TIMESTAMP_MS, RULES, AttestationDoc
from core.attest.verify import AttestationError, parse_document, verify
from core.crypto import cose
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


def assert_every_rule_holds(doc: AttestationDoc, data: bytes) -> None:
    """What RULES promise about an accepted document, checked independently of the parser's code."""
    assert doc.sign1.protected_header() == {1: -35} and doc.sign1.unprotected == {}
    assert doc.sign1.payload in data and 1 <= len(doc.sign1.payload) <= 16384
    assert isinstance(doc.module_id, str) and 1 <= len(doc.module_id) <= 256
    assert doc.digest == "SHA384" and 0 < doc.timestamp <= MAX_TIMESTAMP_MS
    assert 1 <= len(doc.pcrs) <= 32 and all(0 <= i < 32 and len(v) == 48 for i, v in doc.pcrs.items())
    assert 1 <= len(doc.certificate) <= 1024 and 1 <= len(doc.cabundle) <= 8
    assert all(1 <= len(c) <= 1024 for c in doc.cabundle)
    assert doc.public_key is None or 1 <= len(doc.public_key) <= 1024
    assert all(v is None or len(v) <= 1024 for v in (doc.user_data, doc.nonce))


def signed_parts(data: bytes) -> tuple[bytes, bytes, bytes]:
    sign1 = cose.decode(data)
    return sign1.protected, sign1.payload, sign1.signature


@settings(max_examples=400, deadline=None)
@given(documents())
def test_parser_accepts_only_what_every_rule_allows(data: bytes) -> None:
    try:
        doc = parse_document(data)
    except AttestationError as exc:
        assert exc.where and exc.rule in RULES, (exc.rule, exc.where)  # every refusal names a field and a rule
        return
    assert_every_rule_holds(doc, data)


@settings(max_examples=150, deadline=None)
@given(documents())
def test_verify_never_passes_a_change_to_the_signed_parts(data: bytes) -> None:
    report = verify(data, at=SAMPLE_AT)
    assert report.checks and report.checks[0].name == "structure"
    if report.checks[0].ok is False:
        assert report.checks[0].rule in RULES and len(report.checks) == 1
    if report.ok:
        # VERIFIED only when the signed bytes are the original's (only CBOR heads may differ)
        assert signed_parts(data) == signed_parts(SAMPLE)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SAMPLE) - 1), st.integers(1, 255))
def test_no_single_byte_change_of_a_genuine_document_verifies(offset: int, xor: int) -> None:
    """Every byte of a real document is signed or structural: changing any one is never VERIFIED."""
    mutated = SAMPLE[:offset] + bytes([SAMPLE[offset] ^ xor]) + SAMPLE[offset + 1:]
    assert not verify(mutated, at=SAMPLE_AT).ok


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=64))
def test_anything_after_a_genuine_document_is_refused(suffix: bytes) -> None:
    report = verify(SAMPLE + suffix, at=SAMPLE_AT)
    assert [(c.name, c.ok, c.rule) for c in report.checks] == [("structure", False, "cose-single-item")]


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
