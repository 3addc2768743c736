"""Reading an EIF's signature section: the CBOR array of {signing_certificate, signature} entries.

Kept apart from :mod:`core.eif.sign` (which creates and checks signatures) because measurement needs
the signing certificate for PCR8, and signing needs measurement for PCR0: both import this module,
neither imports the other at module level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from core.eif.format import MAX_SIGNATURE_SIZE, EifError, EifFile


@dataclass(frozen=True)
class SignatureEntry:
    certificate_pem: bytes
    cose_sign1: bytes


def _uint_bytes(value: Any, where: str, offset: int) -> bytes:
    if isinstance(value, bytes):  # tolerate byte strings, though nitro-cli writes arrays
        return value
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise EifError(f"{where} should be an array of bytes", offset=offset, problem="bad signature")
    try:
        return bytes(value)
    except (TypeError, ValueError) as exc:
        raise EifError(
            f"{where} holds values that are not bytes", offset=offset, problem="bad signature"
        ) from exc


def parse_signature_section(data: bytes, offset: int = 0) -> list[SignatureEntry]:
    if len(data) > MAX_SIGNATURE_SIZE:
        raise EifError("signature section too large", offset=offset, problem="signature too large")
    try:
        doc = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise EifError(
            f"signature section is not CBOR: {exc}", offset=offset, problem="bad signature"
        ) from exc
    if not isinstance(doc, Sequence) or isinstance(doc, (str, bytes)) or not doc:
        raise EifError(
            "signature section should be a non-empty CBOR array", offset=offset, problem="bad signature"
        )
    entries = []
    for i, item in enumerate(doc):
        if not isinstance(item, Mapping):
            raise EifError(f"signature entry {i} is not a map", offset=offset, problem="bad signature")
        if "signing_certificate" not in item or "signature" not in item:
            raise EifError(
                f"signature entry {i} lacks signing_certificate/signature",
                offset=offset,
                problem="bad signature",
            )
        entries.append(
            SignatureEntry(
                _uint_bytes(item["signing_certificate"], f"entry {i} signing_certificate", offset),
                _uint_bytes(item["signature"], f"entry {i} signature", offset),
            )
        )
    return entries


def signature_entries(eif: EifFile) -> list[SignatureEntry]:
    section = eif.signature
    if section is None:
        return []
    return parse_signature_section(eif.read_section(section, MAX_SIGNATURE_SIZE), section.data_offset)


def signing_certificate_der(eif: EifFile) -> bytes:
    """DER of the first signing certificate (what PCR8 measures)."""
    section = eif.signature
    entries = signature_entries(eif)
    if not entries or section is None:
        raise EifError("EIF has no signature", offset=0, problem="bad signature")
    try:
        cert = x509.load_pem_x509_certificate(entries[0].certificate_pem)
        der = cert.public_bytes(serialization.Encoding.DER)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise EifError(
            f"signing certificate is not a PEM certificate: {exc}",
            offset=section.data_offset,
            problem="bad signature",
        ) from exc
    return der
