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


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_only_typed_errors(data: bytes) -> None:
    try:
        cose.decode(data)
    except cose.CoseError:
        pass
