"""Parse a Nitro attestation document (COSE_Sign1 around a CBOR AttestationDocument map).

Strict about types, lenient about encodings: tagged or untagged COSE, definite or indefinite payload
map. Limits follow what genuine documents need: user_data/nonce/public_key up to 1024 bytes each (the
real NSM accepts that much, though one AWS document says 512), certificates up to 4096 bytes, 1..8
cabundle entries, 16 KiB for the whole document. Every problem raises :class:`AttestationError`
naming the field. Nothing here checks signatures or trust: that is core/attestation.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from core.crypto import cose
from core.errors import NitrodeckError

MAX_DOCUMENT = 16 * 1024
MAX_FIELD = 1024
MAX_CERT = 4096
MAX_CABUNDLE = 8
MAX_MODULE_ID = 256
MAX_PCRS = 32
PCR_SIZES = {"SHA256": 32, "SHA384": 48, "SHA512": 64}
KEYS = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key", "user_data", "nonce")
OPTIONAL = ("public_key", "user_data", "nonce")


class AttestationError(NitrodeckError):
    """A document that is not a well-formed attestation document; ``where`` names the field."""

    code = "ND-ATTESTATION"


@dataclass(frozen=True)
class AttestationDoc:
    module_id: str
    digest: str
    timestamp: int  # ms since the epoch, UTC
    pcrs: dict[int, bytes]
    certificate: bytes  # DER leaf
    cabundle: tuple[bytes, ...]  # DER, root first
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None
    # the signed envelope, kept verbatim: the signature covers these exact bytes
    sign1: cose.Sign1

    def pcr_hex(self) -> dict[int, str]:
        return {i: v.hex() for i, v in sorted(self.pcrs.items())}

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (bytes as hex)."""

        def hx(value: bytes | None) -> str | None:
            return None if value is None else value.hex()

        return {
            "module_id": self.module_id,
            "digest": self.digest,
            "timestamp": self.timestamp,
            "pcrs": {str(i): v for i, v in self.pcr_hex().items()},
            "certificate_bytes": len(self.certificate),
            "cabundle_length": len(self.cabundle),
            "public_key": hx(self.public_key),
            "user_data": hx(self.user_data),
            "nonce": hx(self.nonce),
            "tagged": self.sign1.tagged,
        }


def _bytes(value: Any, field: str, low: int, high: int) -> bytes:
    if not isinstance(value, bytes):
        raise AttestationError(f"should be a byte string, got {type(value).__name__}", where=field)
    if not low <= len(value) <= high:
        raise AttestationError(f"is {len(value)} bytes; allowed {low}..{high}", where=field)
    return value


def _uint(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AttestationError(f"should be an unsigned integer, got {type(value).__name__}", where=field)
    return value


def _pcrs(value: Any, digest: str) -> dict[int, bytes]:
    if not isinstance(value, Mapping):
        raise AttestationError(f"should be a map, got {type(value).__name__}", where="pcrs")
    if not 1 <= len(value) <= MAX_PCRS:
        raise AttestationError(f"has {len(value)} entries; allowed 1..{MAX_PCRS}", where="pcrs")
    size = PCR_SIZES[digest]
    out: dict[int, bytes] = {}
    for index, data in value.items():
        index = _uint(index, "pcrs")
        if not 0 <= index < MAX_PCRS:
            raise AttestationError(f"index {index} is outside 0..{MAX_PCRS - 1}", where="pcrs")
        out[index] = _bytes(data, f"pcrs[{index}]", size, size)
    return out


def _payload_map(payload: bytes) -> Mapping[Any, Any]:
    try:
        obj = cbor2.loads(payload)
    except Exception as exc:  # noqa: BLE001 - cbor2 raises many types on garbage
        raise AttestationError(f"payload is not CBOR: {exc}", where="payload") from exc
    if not isinstance(obj, Mapping):
        raise AttestationError(f"payload should be a map, got {type(obj).__name__}", where="payload")
    return obj


def parse_document(data: bytes) -> AttestationDoc:
    """Decode and type-check a document. Raises AttestationError naming the field at fault."""
    if not isinstance(data, bytes | bytearray):
        raise AttestationError("document must be bytes", where="document")
    data = bytes(data)
    if len(data) > MAX_DOCUMENT:
        raise AttestationError(f"document is {len(data)} bytes; limit {MAX_DOCUMENT}", where="document")
    try:
        sign1 = cose.decode(data, max_size=MAX_DOCUMENT)
    except cose.CoseError as exc:
        raise AttestationError(exc.message, where=exc.where or "COSE_Sign1") from exc
    body = _payload_map(sign1.payload)
    missing = [k for k in KEYS if k not in body and k not in OPTIONAL]
    if missing:
        raise AttestationError(f"missing field(s): {', '.join(missing)}", where="payload")

    module_id = body["module_id"]
    if not isinstance(module_id, str) or not 1 <= len(module_id) <= MAX_MODULE_ID:
        raise AttestationError(f"should be a text string of 1..{MAX_MODULE_ID} characters", where="module_id")
    digest = body["digest"]
    if not isinstance(digest, str) or digest not in PCR_SIZES:
        raise AttestationError(f"unknown digest {str(digest)[:20]!r}", where="digest")
    timestamp = _uint(body["timestamp"], "timestamp")
    if timestamp <= 0 or timestamp >= 2**64:
        raise AttestationError("must be a positive 64-bit millisecond count", where="timestamp")
    cabundle = body["cabundle"]
    if isinstance(cabundle, str | bytes) or not isinstance(cabundle, Sequence):
        raise AttestationError(f"should be an array, got {type(cabundle).__name__}", where="cabundle")
    if not 1 <= len(cabundle) <= MAX_CABUNDLE:
        raise AttestationError(f"has {len(cabundle)} entries; allowed 1..{MAX_CABUNDLE}", where="cabundle")
    optional: dict[str, bytes | None] = {}
    for key in OPTIONAL:
        value = body.get(key)
        optional[key] = None if value is None else _bytes(value, key, 0, MAX_FIELD)
    return AttestationDoc(
        module_id=module_id,
        digest=digest,
        timestamp=timestamp,
        pcrs=_pcrs(body["pcrs"], digest),
        certificate=_bytes(body["certificate"], "certificate", 1, MAX_CERT),
        cabundle=tuple(_bytes(c, f"cabundle[{i}]", 1, MAX_CERT) for i, c in enumerate(cabundle)),
        public_key=optional["public_key"],
        user_data=optional["user_data"],
        nonce=optional["nonce"],
        sign1=sign1,
    )
