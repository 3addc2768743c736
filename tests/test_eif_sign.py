"""EIF signing: nitro-cli's signature section, PCR8, verification, tampering, bad inputs."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from core.crypto import cose
from core.eif.format import EifError, EifWriter, SectionType, read_eif
from core.eif.measure import measure_eif
from core.eif.sign import SigningError, check_signature, sign_eif
from core.eif.signature import parse_signature_section

K, C, M, R = SectionType.KERNEL, SectionType.CMDLINE, SectionType.METADATA, SectionType.RAMDISK


def make_cert(
    tmp: Path, name: str = "signer", curve: ec.EllipticCurve | None = None, days: tuple[int, int] = (-1, 30)
) -> tuple[Path, Path, x509.Certificate]:
    key = ec.generate_private_key(curve or ec.SECP384R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nitrodeck tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0]))
        .not_valid_after(now + dt.timedelta(days=days[1]))
        .sign(key, hashes.SHA384())
    )
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path, cert


def unsigned(tmp: Path) -> Path:
    path = tmp / "app.eif"
    EifWriter().add(K, b"KERNEL").add(C, b"console=ttyS0").add(M, b"{}").add(R, b"RAMDISK0").add(
        R, b"RAMDISK1"
    ).write(path)
    return path


def test_sign_round_trip(tmp_path: Path) -> None:
    eif_path = unsigned(tmp_path)
    before = measure_eif(eif_path)
    cert_path, key_path, cert = make_cert(tmp_path)
    after = sign_eif(eif_path, cert_path, key_path)
    der = cert.public_bytes(serialization.Encoding.DER)
    # PCR8 = SHA384(48 zero bytes || SHA384(DER of the certificate)), computed here, not by the code under test
    assert after.pcr8 == hashlib.sha384(b"\0" * 48 + hashlib.sha384(der).digest()).hexdigest()
    assert (after.pcr0, after.pcr1, after.pcr2) == (before.pcr0, before.pcr1, before.pcr2)
    eif = read_eif(eif_path)
    assert eif.crc_ok and eif.header.num_sections == 6 and eif.sections[-1].type == SectionType.SIGNATURE
    info = check_signature(eif_path)
    assert info.signed and info.ok and info.valid_now and info.pcr8 == after.pcr8 and info.problem is None
    ci = info.certificate_info
    assert ci["IssuerName"] == {
        "countryName": "US",
        "organizationName": "nitrodeck tests",
        "commonName": "signer",
    }
    assert ci["Algorithm"] == "ecdsa-with-SHA384"
    assert ci["NotAfter"].endswith(" GMT") and len(ci["NotAfter"].split()) == 5
    assert ci["Signature"] == ":".join(f"{b:02X}" for b in cert.signature)


def test_section_shape_is_nitro_clis(tmp_path: Path) -> None:
    eif_path = unsigned(tmp_path)
    cert_path, key_path, cert = make_cert(tmp_path)
    sign_eif(eif_path, cert_path, key_path)
    eif = read_eif(eif_path)
    raw = eif.read_section(eif.signature, 32768)  # type: ignore[arg-type]
    doc = cbor2.loads(raw)
    assert isinstance(doc, list) and len(doc) == 1 and set(doc[0]) == {"signing_certificate", "signature"}
    assert all(isinstance(v, int) for v in doc[0]["signing_certificate"])  # arrays of uints, not bstr
    assert bytes(doc[0]["signing_certificate"]) == cert_path.read_bytes()
    message = cose.decode(bytes(doc[0]["signature"]))
    assert not message.tagged and message.algorithm == -35
    payload = cbor2.loads(message.payload)
    assert payload == {"register_index": 0, "register_value": list(bytes.fromhex(measure_eif(eif_path).pcr0))}
    assert message.verify(cert.public_key())  # type: ignore[arg-type]


def test_resign_replaces_signature(tmp_path: Path) -> None:
    eif_path = unsigned(tmp_path)
    a = make_cert(tmp_path, "a")
    b = make_cert(tmp_path, "b")
    first = sign_eif(eif_path, a[0], a[1])
    second = sign_eif(eif_path, b[0], b[1])
    eif = read_eif(eif_path)
    assert len(eif.of_type(SectionType.SIGNATURE)) == 1 and eif.header.num_sections == 6
    assert first.pcr8 != second.pcr8 and first.pcr0 == second.pcr0
    assert check_signature(eif).certificate_info["IssuerName"]["commonName"] == "b"


def test_tampered_ramdisk_fails_the_check(tmp_path: Path) -> None:
    eif_path = unsigned(tmp_path)
    cert_path, key_path, _ = make_cert(tmp_path)
    sign_eif(eif_path, cert_path, key_path)
    raw = bytearray(eif_path.read_bytes())
    at = raw.index(b"RAMDISK1")
    raw[at] ^= 0x20
    eif_path.write_bytes(bytes(raw))
    eif = read_eif(eif_path)
    assert eif.crc_ok is False
    info = check_signature(eif)
    assert info.signed and not info.ok and "PCR0" in (info.problem or "")


def test_signature_from_another_key_fails(tmp_path: Path) -> None:
    eif_path = unsigned(tmp_path)
    cert_a, key_a, _ = make_cert(tmp_path, "a")
    cert_b, _, _ = make_cert(tmp_path, "b")
    sign_eif(eif_path, cert_a, key_a)
    eif = read_eif(eif_path)
    doc = cbor2.loads(eif.read_section(eif.signature, 32768))  # type: ignore[arg-type]
    doc[0]["signing_certificate"] = list(cert_b.read_bytes())  # swap the certificate, keep the signature
    other = tmp_path / "swapped.eif"
    w = EifWriter()
    for kind, data in ((K, b"KERNEL"), (C, b"console=ttyS0"), (M, b"{}"), (R, b"RAMDISK0"), (R, b"RAMDISK1")):
        w.add(kind, data)
    w.add(SectionType.SIGNATURE, cbor2.dumps(doc)).write(other)
    info = check_signature(other)
    assert info.signed and not info.ok and "does not verify" in (info.problem or "")


def test_expired_certificate_is_flagged(tmp_path: Path) -> None:
    eif_path = unsigned(tmp_path)
    cert_path, key_path, _ = make_cert(tmp_path, "old", days=(-30, -1))
    sign_eif(eif_path, cert_path, key_path)
    info = check_signature(eif_path)
    assert info.ok and not info.valid_now


def test_bad_signing_inputs_are_typed(tmp_path: Path) -> None:
    eif_path = unsigned(tmp_path)
    cert_path, key_path, _ = make_cert(tmp_path)
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    cases = [
        (junk, key_path, "not a PEM X.509 certificate", str(junk)),
        (cert_path, junk, "not an unencrypted PEM private key", str(junk)),
        (
            tmp_path / "absent.pem",
            key_path,
            "cannot read the signing certificate",
            str(tmp_path / "absent.pem"),
        ),
    ]
    rsa_key = tmp_path / "rsa.key"
    rsa_key.write_bytes(
        rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cases.append((cert_path, rsa_key, "must be an EC key", str(rsa_key)))
    other_key = make_cert(tmp_path, "other")[1]
    cases.append((cert_path, other_key, "does not match the signing certificate", str(other_key)))
    arn = "arn:aws:kms:us-east-1:key/abcd"
    cases.append((cert_path, Path(arn), "not a KMS key ARN", arn))
    for cert, key, text, where in cases:
        with pytest.raises(SigningError) as err:
            sign_eif(eif_path, cert, key)
        assert text in err.value.message and err.value.where == where
    assert not read_eif(eif_path).is_signed  # nothing was written


def test_p256_key_signs_with_es256(tmp_path: Path) -> None:
    eif_path = unsigned(tmp_path)
    cert_path, key_path, _ = make_cert(tmp_path, "p256", curve=ec.SECP256R1())
    sign_eif(eif_path, cert_path, key_path)
    assert check_signature(eif_path).ok


def test_garbage_signature_section(tmp_path: Path) -> None:
    path = tmp_path / "g.eif"
    EifWriter().add(K, b"k").add(C, b"c").add(R, b"r").add(SectionType.SIGNATURE, b"\xff\xff").write(path)
    with pytest.raises(EifError) as err:
        measure_eif(path)
    assert err.value.problem == "bad signature"


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.one_of(st.integers(-5, 300), st.binary(max_size=8), st.text(max_size=8)),
            lambda inner: st.one_of(
                st.lists(inner, max_size=3),
                st.dictionaries(
                    st.sampled_from(["signing_certificate", "signature", "x"]), inner, max_size=3
                ),
            ),
            max_leaves=10,
        ).map(cbor2.dumps),
    )
)
def test_fuzz_signature_section_parser(data: bytes) -> None:
    try:
        entries = parse_signature_section(data)
        assert entries and all(isinstance(e.certificate_pem, bytes) for e in entries)
    except EifError as exc:
        assert exc.problem in ("bad signature", "signature too large")


def _kms_cert(tmp: Path, public_key: ec.EllipticCurvePublicKey) -> Path:
    """A certificate for a key that lives in KMS, issued by a local test CA."""
    ca_key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kms signer")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA384())
    )
    path = tmp / "kms-cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_kms_key_signs_through_moto(tmp_path: Path, moto_kms: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", moto_kms)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    kms = boto3.client("kms", region_name="us-east-1")
    arn = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=arn)["PublicKey"])
    assert isinstance(public, ec.EllipticCurvePublicKey)
    cert_path = _kms_cert(tmp_path, public)
    eif_path = unsigned(tmp_path)
    result = sign_eif(eif_path, cert_path, arn)
    info = check_signature(eif_path)
    assert info.ok and info.pcr8 == result.pcr8
    assert info.certificate_info["IssuerName"] == {"commonName": "test CA"}
    # a certificate for another key is refused before anything is signed
    other_cert, _, _ = make_cert(tmp_path, "other")
    with pytest.raises(SigningError, match="does not match"):
        sign_eif(eif_path, other_cert, arn)
    missing = arn.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    with pytest.raises(SigningError, match="cannot get the KMS public key") as err:
        sign_eif(eif_path, cert_path, missing)
    assert err.value.where == missing
