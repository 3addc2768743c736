import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from core.crypto import cose


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_sign_verify_roundtrip_and_tamper(curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    msg = cose.sign(b"payload bytes", key)
    parsed = cose.decode(msg.to_bytes())
    assert parsed.verify(key.public_key())
    assert cose.decode(msg.to_bytes(tagged=True)).tagged
    flipped = cose.Sign1(parsed.protected, {}, b"payload byteS", parsed.signature)
    assert not flipped.verify(key.public_key())
    other = ec.generate_private_key(curve)
    assert not parsed.verify(other.public_key())


def test_untagged_output_starts_with_array_head() -> None:
    msg = cose.sign(b"x", ec.generate_private_key(ec.SECP384R1()))
    raw = msg.to_bytes()
    assert raw[0] == 0x84
    assert msg.protected == bytes.fromhex("a1013822")  # {1: -35}, as in real attestation documents


@pytest.mark.parametrize(
    "data,where",
    [
        (cbor2.dumps([1, 2, 3]), "COSE_Sign1"),
        (cbor2.dumps([b"", {}, "text", b""]), "COSE_Sign1[2]"),
        (cbor2.dumps(cbor2.CBORTag(17, [b"", {}, b"", b""])), "COSE_Sign1"),
        (b"\xff\x00", "COSE_Sign1"),
    ],
)
def test_malformed_is_typed(data: bytes, where: str) -> None:
    with pytest.raises(cose.CoseError) as err:
        cose.decode(data)
    assert err.value.where == where


RULES = {"document-size", "cose-tag", "cose-single-item", "cose-array", "cbor-well-formed", "cbor-no-tags",
         "cbor-map-keys"}


def _accepted_invariants(data: bytes, msg: cose.Sign1) -> None:
    """What decode promises: one item, at most one tag (18, outermost), the four items as cbor2 reads them."""
    value = cbor2.loads(data)
    if msg.tagged:
        assert isinstance(value, cbor2.CBORTag) and value.tag == 18
        value = list(value.value)
    assert value == [msg.protected, msg.unprotected, msg.payload, msg.signature]
    # a re-encoding decodes to the same message: nothing depended on how the input was encoded
    assert cose.decode(msg.to_bytes(tagged=msg.tagged)) == msg


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_typed_errors_with_a_rule(data: bytes) -> None:
    try:
        msg = cose.decode(data)
    except cose.CoseError as exc:
        assert exc.rule in RULES and exc.where
        return
    _accepted_invariants(data, msg)


_leaf = st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=20) | st.text(max_size=5)
_cbor = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.integers(-5, 5) | st.text(max_size=3), inner, max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(_cbor, min_size=0, max_size=5), st.sampled_from([None, 17, 18, 55799]), st.binary(max_size=3))
def test_fuzz_structured_envelopes(items: list[object], tag: int | None, suffix: bytes) -> None:
    data = cbor2.dumps(items if tag is None else cbor2.CBORTag(tag, items)) + suffix
    try:
        msg = cose.decode(data)
    except cose.CoseError as exc:
        assert exc.rule in RULES
        if suffix:
            assert exc.rule in ("cose-single-item", "cose-tag", "cose-array", "cbor-well-formed", "cbor-map-keys")
        return
    assert not suffix and tag in (None, 18) and len(items) == 4
    _accepted_invariants(data, msg)


def test_trailing_bytes_and_tags_are_refused_by_rule() -> None:
    good = cose.sign(b"x", ec.generate_private_key(ec.SECP384R1())).to_bytes()
    cases = {
        good + b"\x00": "cose-single-item",
        good + good: "cose-single-item",
        cbor2.dumps(cbor2.CBORTag(18, cbor2.CBORTag(18, cbor2.loads(good)))): "cose-tag",
        cbor2.dumps(cbor2.CBORTag(61, cbor2.loads(good))): "cose-tag",
        cbor2.dumps([b"", {1: cbor2.CBORTag(1, 0)}, b"", b""]): "cbor-no-tags",
        b"\x84\x40\xa2\x01\x01\x01\x02\x40\x40": "cbor-map-keys",  # {1: 1, 1: 2}
        b"\x84\x40\xa1\x41\x00\x01\x40\x40": "cbor-map-keys",  # a byte-string key
        b"\x81" * 40 + b"\x00": "cbor-well-formed",
    }
    for data, rule in cases.items():
        with pytest.raises(cose.CoseError) as err:
            cose.decode(data)
        assert err.value.rule == rule, (data[:12].hex(), err.value)
    assert cose.decode(cbor2.dumps(cbor2.CBORTag(18, cbor2.loads(good)))).tagged
