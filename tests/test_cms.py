"""core/cms.py: the real KMS vectors parse, our own CMS round-trips, malformed CMS is refused."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.crypto import cms
from core.errors import InputTooLarge, NitrodeckError
from tests.conftest import testdata as vector_file

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    ("name", "chunked", "content_len"),
    [("input_ber.ber", True, 48), ("input_ber_w_ctx.ber", False, None)],
)
def test_real_kms_vectors_parse(name: str, chunked: bool, content_len: int | None) -> None:
    data = vector_file("kms-cms", name).read_bytes()
    env = cms.parse_enveloped(data)
    assert env.version == 2
    assert len(env.recipients) == 1
    rec = env.recipients[0]
    assert rec.version == 2
    assert len(rec.subject_key_identifier) == 32
    assert len(rec.encrypted_key) == 256
    assert rec.key_encryption_algorithm == cms.OID_RSAES_OAEP
    assert rec.oaep_hash == cms.OID_SHA256 and rec.oaep_mgf_hash == cms.OID_SHA256
    assert env.content_type == cms.OID_DATA
    assert env.content_encryption_algorithm == cms.OID_AES256_CBC
    assert len(env.iv) == 16
    assert env.chunked_content is chunked
    assert len(env.encrypted_content) % 16 == 0 and env.encrypted_content
    if content_len is not None:
        assert len(env.encrypted_content) == content_len


def test_real_vector_cannot_be_decrypted_with_a_foreign_key() -> None:
    data = vector_file("kms-cms", "input_ber.ber").read_bytes()
    with pytest.raises(cms.CmsError, match="does not decrypt"):
        cms.decrypt(data, _KEY)


@pytest.mark.parametrize("chunk", [0, 16, 5])
@pytest.mark.parametrize("plaintext", [b"", b"k" * 32, bytes(range(256)) * 4])
def test_round_trip(plaintext: bytes, chunk: int) -> None:
    blob = cms.build_enveloped(plaintext, _KEY.public_key(), chunk=chunk)
    env = cms.parse_enveloped(blob)
    assert env.recipients[0].subject_key_identifier == cms.subject_key_identifier(_KEY.public_key())
    assert env.chunked_content is (chunk > 0)
    assert cms.decrypt(blob, _KEY) == plaintext


def test_wrong_recipient_key_is_refused() -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    blob = cms.build_enveloped(b"secret", _KEY.public_key())
    with pytest.raises(cms.CmsError):
        cms.decrypt(blob, other)


def test_truncated_vector_names_offset() -> None:
    data = vector_file("kms-cms", "input_ber.ber").read_bytes()
    with pytest.raises(cms.CmsError) as info:
        cms.parse_enveloped(data[:200])
    assert info.value.where and "offset" in info.value.where


def test_trailing_bytes_refused() -> None:
    data = vector_file("kms-cms", "input_ber_w_ctx.ber").read_bytes()
    with pytest.raises(cms.CmsError, match="trailing"):
        cms.parse_enveloped(data + b"\x00")


def test_wrong_content_type_refused() -> None:
    data = bytearray(vector_file("kms-cms", "input_ber.ber").read_bytes())
    data[12] = 0x01  # pkcs7-envelopedData -> pkcs7-data
    with pytest.raises(cms.CmsError, match="envelopedData"):
        cms.parse_enveloped(bytes(data))


def test_deep_nesting_refused() -> None:
    data = b"\x30\x80" * 100 + b"\x00\x00" * 100
    with pytest.raises(cms.CmsError, match="deeper"):
        cms.parse_enveloped(data)


def test_size_limit() -> None:
    with pytest.raises(InputTooLarge):
        cms.parse_enveloped(b"\x30" * (cms.MAX_CMS_BYTES + 1))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_only_typed_errors(data: bytes) -> None:
    try:
        env = cms.parse_enveloped(data)
    except NitrodeckError:
        return
    # what parses is a well-formed envelope, all of it taken from the input
    assert len(env.iv) == 16 and len(env.encrypted_content) % 16 == 0
    assert len(env.encrypted_content) + len(env.iv) < len(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_vector(data: st.DataObject) -> None:
    blob = bytearray(vector_file("kms-cms", "input_ber.ber").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(blob)))
    try:
        env = cms.parse_enveloped(bytes(blob[:cut]))
    except NitrodeckError:
        return
    assert len(env.iv) == 16 and len(env.encrypted_content) % 16 == 0
