"""EIF signing (PCR8) as nitro-cli does it, and the signature check describe-eif/run-enclave report.

The signature section is CBOR: an array of one map {"signing_certificate": PEM file bytes,
"signature": untagged COSE_Sign1 bytes}, both encoded as arrays of small uints (serde's Vec<u8>).
The COSE payload is CBOR {"register_index": 0, "register_value": PCR0 as 48 uints}. PCR8 is the
PCR of the certificate's DER. Private keys are only read to sign, never logged or copied; with a
KMS key ARN (nitro-cli accepts one too) the key never leaves KMS.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from core.crypto import cose
from core.eif.format import MAX_SIGNATURE_SIZE, EifFile, EifWriter, FileRange, SectionType, read_eif
from core.eif.measure import measure, pcr_of_bytes
from core.eif.signature import (
    signature_entries,
)
from core.errors import NitrodeckError
from core.files import atomic_output, open_regular, output_lock
from core.models import Measurements

MAX_PEM = 64 * 1024

# OpenSSL long names, which describe-eif uses as IssuerName keys
_LONG_NAMES = {
    NameOID.COMMON_NAME: "commonName",
    NameOID.COUNTRY_NAME: "countryName",
    NameOID.LOCALITY_NAME: "localityName",
    NameOID.STATE_OR_PROVINCE_NAME: "stateOrProvinceName",
    NameOID.ORGANIZATION_NAME: "organizationName",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "organizationalUnitName",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.DOMAIN_COMPONENT: "domainComponent",
    NameOID.STREET_ADDRESS: "streetAddress",
    NameOID.POSTAL_CODE: "postalCode",
    NameOID.TITLE: "title",
    NameOID.GIVEN_NAME: "givenName",
    NameOID.SURNAME: "surname",
}
_SIG_ALGS = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ecdsa-with-SHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ecdsa-with-SHA384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ecdsa-with-SHA512",
    SignatureAlgorithmOID.RSA_WITH_SHA256: "sha256WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA384: "sha384WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA512: "sha512WithRSAEncryption",
}


class SigningError(NitrodeckError):
    """Bad signing inputs (certificate, key) or a failed signing step; nitro-cli's E60."""

    code = "ND-SIGNING"
    cli_code = "E60"


@dataclass
class SignatureInfo:
    signed: bool
    ok: bool = False  # COSE signature valid over this EIF's PCR0 (describe-eif SignatureCheck)
    pcr8: str | None = None
    certificate_info: dict[str, Any] = field(default_factory=dict)
    #: certificate validity window contains now (run-enclave refuses otherwise: E59)
    valid_now: bool = False
    problem: str | None = None

    @property
    def certificate(self) -> dict[str, Any]:
        return self.certificate_info


# --- inputs ---------------------------------------------------------------------------------------


def _read_small(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        with os.fdopen(open_regular(Path(path)), "rb") as fh:
            data = fh.read(MAX_PEM + 1)
    except NitrodeckError as exc:
        raise SigningError(f"cannot read the {what}: {exc.message}", where=str(path)) from None
    except OSError as exc:
        raise SigningError(f"cannot read the {what}: {exc.strerror}", where=str(path)) from exc
    if len(data) > MAX_PEM:
        raise SigningError(f"the {what} is larger than {MAX_PEM} bytes", where=str(path))
    return data


def load_certificate(pem: bytes, where: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningError(f"not a PEM X.509 certificate: {exc}", where=where) from exc


# nitro-cli accepts a KMS key ARN in place of a key file
KMS_ARN = re.compile(r"^arn:(aws|aws-cn|aws-us-gov):kms:([a-z0-9-]+):(\d{12}):key[:/]([A-Za-z0-9-]+)$")
_KMS_ALGS = {"secp256r1": "ECDSA_SHA_256", "secp384r1": "ECDSA_SHA_384", "secp521r1": "ECDSA_SHA_512"}
_COSE_ALGS = {"secp256r1": -7, "secp384r1": -35, "secp521r1": -36}  # ES256/ES384/ES512


@dataclass(frozen=True)
class Signer:
    """Whatever holds the private key: a local EC key, or a KMS key that never leaves KMS."""

    public_key: ec.EllipticCurvePublicKey
    sign_der: Callable[[bytes], bytes]  # DER ECDSA signature over the message, hash per curve
    where: str


def load_private_key(path: str | os.PathLike[str]) -> ec.EllipticCurvePrivateKey:
    text = str(path)
    data = _read_small(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"not an unencrypted PEM private key: {exc}", where=text) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SigningError("the private key must be an EC key (P-256/P-384/P-521)", where=text)
    if key.curve.name not in _KMS_ALGS:
        raise SigningError(f"unsupported curve {key.curve.name}", where=text)
    return key


def _local_signer(path: str | os.PathLike[str]) -> Signer:
    key = load_private_key(path)
    hash_cls = cose.ALGORITHMS[_COSE_ALGS[key.curve.name]][0]
    return Signer(key.public_key(), lambda data: key.sign(data, ec.ECDSA(hash_cls())), str(path))


def _kms_signer(arn: str) -> Signer:
    """Signs through KMS (endpoint from boto3's own settings, e.g. AWS_ENDPOINT_URL_KMS)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    match = KMS_ARN.match(arn)
    assert match is not None
    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=10, read_timeout=30)
    client = boto3.client("kms", region_name=match.group(2), config=config)
    try:
        der = client.get_public_key(KeyId=arn)["PublicKey"]
    except (BotoCoreError, ClientError) as exc:
        raise SigningError(f"cannot get the KMS public key: {exc}", where=arn) from None
    public = serialization.load_der_public_key(der)
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name not in _KMS_ALGS:
        raise SigningError("the KMS key must be an ECC_NIST_P256/P384/P521 signing key", where=arn)
    algorithm = _KMS_ALGS[public.curve.name]

    def sign_der(data: bytes) -> bytes:
        try:
            reply = client.sign(KeyId=arn, Message=data, MessageType="RAW", SigningAlgorithm=algorithm)
        except (BotoCoreError, ClientError) as exc:
            raise SigningError(f"KMS Sign failed: {exc}", where=arn) from None
        return bytes(reply["Signature"])

    return Signer(public, sign_der, arn)


def load_signer(private_key: str | os.PathLike[str]) -> Signer:
    """A local EC key PEM, or a KMS key ARN (as nitro-cli's --private-key accepts)."""
    text = str(private_key)
    if KMS_ARN.match(text):
        return _kms_signer(text)
    if text.startswith("arn:"):
        raise SigningError("not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)", where=text)
    return _local_signer(private_key)


# --- the section ----------------------------------------------------------------------------------


def pcr0_payload(pcr0_hex: str) -> bytes:
    return cbor2.dumps({"register_index": 0, "register_value": list(bytes.fromhex(pcr0_hex))})


def cose_sign(payload: bytes, signer: Signer) -> cose.Sign1:
    """COSE_Sign1 through a :class:`Signer` (the key may live in KMS), raw r||s as COSE wants."""
    alg = _COSE_ALGS[signer.public_key.curve.name]
    size = cose.ALGORITHMS[alg][1]
    protected = cbor2.dumps({1: alg})
    unsigned = cose.Sign1(protected, {}, payload, b"")
    r, s = decode_dss_signature(signer.sign_der(unsigned.sig_structure()))
    return cose.Sign1(protected, {}, payload, r.to_bytes(size, "big") + s.to_bytes(size, "big"))


def build_signature_section(cert_pem: bytes, signer: Signer, pcr0_hex: str) -> bytes:
    message = cose_sign(pcr0_payload(pcr0_hex), signer).to_bytes(tagged=False)
    return cbor2.dumps([{"signing_certificate": list(cert_pem), "signature": list(message)}])


def _asn1_time(when: dt.datetime) -> str:
    """OpenSSL's Asn1Time display: 'Mar  3 12:00:00 2023 GMT' (day padded with a space)."""
    return f"{when:%b} {when.day:2d} {when:%H:%M:%S} {when.year} GMT"


def certificate_info(cert: x509.Certificate) -> dict[str, Any]:
    issuer = {_LONG_NAMES.get(a.oid, a.oid.dotted_string): str(a.value) for a in cert.issuer}
    # image-format's SignCertificateInfo holds IssuerName in a BTreeMap: keys sorted, the last of a repeated
    # attribute wins (a dict comprehension keeps the last too)
    issuer = dict(sorted(issuer.items()))
    return {
        "IssuerName": issuer,
        "Algorithm": _SIG_ALGS.get(cert.signature_algorithm_oid, cert.signature_algorithm_oid.dotted_string),
        "NotBefore": _asn1_time(cert.not_valid_before_utc),
        "NotAfter": _asn1_time(cert.not_valid_after_utc),
        "Signature": ":".join(f"{b:02X}" for b in cert.signature),
    }


def check_signature(eif: EifFile | str | os.PathLike[str], pcr0: str | None = None) -> SignatureInfo:
    """Whether the EIF is signed, and whether its signature covers its PCR0 (never raises for a
    wrongly signed EIF: the verdict is ``ok=False`` with ``problem`` set)."""
    eif = eif if isinstance(eif, EifFile) else read_eif(eif)
    entries = signature_entries(eif)
    if not entries:
        return SignatureInfo(signed=False)
    entry = entries[0]
    try:
        cert = x509.load_pem_x509_certificate(entry.certificate_pem)
        der = cert.public_bytes(serialization.Encoding.DER)
        now = dt.datetime.now(dt.UTC)
        info = SignatureInfo(
            signed=True,
            pcr8=pcr_of_bytes(der),
            certificate_info=certificate_info(cert),
            valid_now=cert.not_valid_before_utc <= now <= cert.not_valid_after_utc,
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # an enclave image is hostile input: a certificate cryptography cannot read is a verdict
        return SignatureInfo(signed=True, problem=f"signing certificate cannot be read: {exc}")
    try:
        message = cose.decode(entry.cose_sign1)
    except cose.CoseError as exc:
        info.problem = f"signature is not COSE_Sign1: {exc}"
        return info
    try:
        public = cert.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        info.problem = f"certificate key is invalid or unsupported: {exc}"
        return info
    if not isinstance(public, ec.EllipticCurvePublicKey):
        info.problem = "certificate key is not EC"
        return info
    try:
        valid = message.verify(public)
    except cose.CoseError as exc:
        info.problem = str(exc)
        return info
    if not valid:
        info.problem = "COSE signature does not verify with the certificate's key"
        return info
    expected = pcr0 or measure(eif).pcr0
    try:
        payload = cbor2.loads(message.payload)
    except Exception:  # noqa: BLE001 - any decoding failure means: not our payload
        payload = None
    if (
        not isinstance(payload, Mapping)
        or payload.get("register_index") != 0
        or _safe_bytes(payload.get("register_value")) != bytes.fromhex(expected)
    ):
        info.problem = "signed PCR0 does not match this EIF's PCR0"
        return info
    info.ok = True
    return info


def _safe_bytes(value: Any) -> bytes | None:
    try:
        return bytes(value) if isinstance(value, (Sequence, bytes)) and not isinstance(value, str) else None
    except (TypeError, ValueError):
        return None


# --- signing --------------------------------------------------------------------------------------


def _public_key(cert: x509.Certificate, where: str) -> ec.EllipticCurvePublicKey:
    """The certificate's EC key; a key cryptography cannot load or that is not EC is typed."""
    try:
        key = cert.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningError(f"the signing certificate's key cannot be used: {exc}", where=where) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _KMS_ALGS:
        raise SigningError("the signing certificate's key must be EC P-256/P-384/P-521", where=where)
    return key


def sign_eif(
    eif_path: str | os.PathLike[str],
    certificate: str | os.PathLike[str],
    private_key: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    locked: bool = False,
) -> Measurements:
    """Sign (or re-sign) an EIF; writes ``output`` (default: in place, atomically).

    The input is opened once: its PCR0 (what is signed) and the sections copied into the output come
    from the same descriptor, and the returned measurements are of the bytes published, read from
    our own temp file before it is renamed over the target.
    """
    cert_pem = _read_small(certificate, "signing certificate")
    cert = load_certificate(cert_pem, str(certificate))
    signer = load_signer(private_key)
    cert_key = _public_key(cert, str(certificate))
    if cert_key.public_numbers() != signer.public_key.public_numbers():
        raise SigningError("the private key does not match the signing certificate", where=str(private_key))
    path = Path(eif_path)
    target = Path(output) if output is not None else path
    with read_eif(path) as eif:
        pcr0 = measure(eif).pcr0
        section = build_signature_section(cert_pem, signer, pcr0)
        if len(section) > MAX_SIGNATURE_SIZE:
            raise SigningError(
                f"signature section would be {len(section)} bytes, over {MAX_SIGNATURE_SIZE}",
                where=str(certificate),
            )
        writer = EifWriter(
            flags=eif.header.flags, default_mem=eif.header.default_mem, default_cpus=eif.header.default_cpus
        )
        for sec in eif.sections:
            if sec.type != SectionType.SIGNATURE:
                writer.add(sec.type, FileRange(eif, sec.data_offset, sec.size))
        writer.add(SectionType.SIGNATURE, section)
        lock = output_lock(target.absolute()) if locked else contextlib.nullcontext()
        with lock, atomic_output(target, mode=0o644) as out, writer.write_into(out) as written:
            measurements = measure(written)
    return measurements
