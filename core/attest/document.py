"""Parse a Nitro attestation document: exactly one COSE_Sign1 around the AWS AttestationDocument map.

Strict about the format, lenient only about CBOR encodings that the signature covers anyway (tagged
or untagged COSE, definite or indefinite payload map, non-shortest integer heads). Every rule is
named in :data:`RULES` with its source in the AWS documentation (NSM API
``docs/attestation_process.md`` §2.2 CDDL and §3, the same text as AWS's "Verifying the root of
trust"); docs/attestation.md prints the table with the test of each rule. A document that breaks a
rule raises :class:`AttestationError` whose ``where`` names the field and ``rule`` the rule.

Sizes follow the CDDL: certificates and cabundle entries 1..1024 bytes, public_key 1..1024,
user_data and nonce 0..1024 (the real NSM fills all three to 1024 bytes; §3.2.2.2's 512 would refuse
genuine documents), digest "SHA384" only with 48-byte PCRs. Nothing here checks signatures or trust:
that is core/attest/verify.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.crypto import cose
from core.errors import NitrodeckError

MAX_DOCUMENT = 16 * 1024  # SDK-C's NSM_MAX_ATTESTATION_DOC_SIZE
MAX_PAYLOAD = 16384  # CDDL: payload bstr .size (1..16384)
MAX_FIELD = 1024
MAX_CERT = 1024
MAX_CABUNDLE = 8  # AWS: non-empty; 8 bounds the chain walk (real bundles hold 4)
MAX_MODULE_ID = 256
MAX_PCRS = 32
DIGEST = "SHA384"
PCR_SIZE = 48
#: PCR sizes of the digests the NSM API's Rust enum knows; documents may carry only SHA384
PCR_SIZES = {"SHA256": 32, "SHA384": 48, "SHA512": 64}
KEYS = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key", "user_data", "nonce")
OPTIONAL = ("public_key", "user_data", "nonce")
PROTECTED = {1: -35}  # alg: ES384
#: the last millisecond Python's datetime can represent (9999-12-31T23:59:59.999Z); later is refused
MAX_TIMESTAMP_MS = int(dt.datetime(9999, 12, 31, 23, 59, 59, 999000, dt.UTC).timestamp() * 1000)

_CDDL = "NSM API attestation_process.md §2.2 (CDDL)"
_SYNTAX = "§3.2.2.2 (check content)"


@dataclass(frozen=True)
class Rule:
    field: str
    text: str
    source: str


#: every format rule: id -> (field, what it requires, where AWS says so). docs/attestation.md has the table.
RULES: dict[str, Rule] = {
    "document-size": Rule("document", f"at most {MAX_DOCUMENT} bytes", "SDK-C NSM_MAX_ATTESTATION_DOC_SIZE (16 KiB)"),
    "cose-tag": Rule("COSE_Sign1", "untagged, or CBOR tag 18 exactly once; no other tag",
                     "§3.1: \"tagged or untagged … identified by the CBOR tag 18\""),
    "cose-single-item": Rule("COSE_Sign1", "exactly one CBOR item: no bytes after the COSE_Sign1",
                             "§3.2 \"Decode the CBOR object and map it to a COSE_Sign1\" (one object)"),
    "cose-array": Rule("COSE_Sign1", "array of 4: bstr, map, bstr, bstr", "§3.1 COSE_Sign1 structure"),
    "cbor-well-formed": Rule("any", "well-formed CBOR, nesting at most 16 levels", "RFC 8949; nitrodeck bound"),
    "cbor-no-tags": Rule("any", "no CBOR tags inside (the CDDL types are untagged)", _CDDL),
    "cbor-map-keys": Rule("any map", "keys are integers or text, each at most once", _CDDL + "; §3.2.2.2 PCR key types"),
    "cose-protected": Rule("COSE_Sign1[0]", "protected header is exactly {1: -35} (ES384)", "§3.1 \"{1: -35}\""),
    "cose-unprotected": Rule("COSE_Sign1[1]", "unprotected header is empty", "§3.1 \"{} We have nothing in unprotected\""),
    "payload-size": Rule("payload", "1..16384 bytes", "§3.1 \"bstr .size (1..16384)\""),
    "payload-map": Rule("payload", "exactly one CBOR map (definite or indefinite), nothing after it",
                        _CDDL + "; §3.1 payload = bstr of the AttestationDocument"),
    "payload-keys": Rule("payload", "only the 9 AttestationDocument keys", _CDDL + " (a closed map); §3.2.2.1 allowed fields"),
    "payload-required": Rule("payload", "module_id, digest, timestamp, pcrs, certificate, cabundle present, not null",
                             "§3.2.2.1 mandatory fields; \"No field content can be null\""),
    "module-id": Rule("module_id", f"text of 1..{MAX_MODULE_ID} characters",
                      "§3.2.2.2 \"Module ID must be non-empty\" (upper bound: nitrodeck)"),
    "digest": Rule("digest", "exactly \"SHA384\"", _CDDL + " digest = \"SHA384\"; " + _SYNTAX),
    "timestamp": Rule("timestamp", "uint .size 8, > 0, up to 9999-12-31 (milliseconds)",
                      _CDDL + " uint .size 8; " + _SYNTAX + " > 0; upper bound: datetime range"),
    "pcrs-count": Rule("pcrs", f"a map of 1..{MAX_PCRS} entries", _SYNTAX + " $size ∈ [1, 32]"),
    "pcrs-index": Rule("pcrs", "keys are integers 0..31", _CDDL + " index = 0..31; " + _SYNTAX),
    "pcrs-size": Rule("pcrs[N]", f"byte strings of {PCR_SIZE} bytes (SHA384)", _CDDL + " pcr; digest = \"SHA384\""),
    "certificate-size": Rule("certificate", f"byte string of 1..{MAX_CERT} bytes", _CDDL + " cert = bytes .size (1..1024)"),
    "cabundle-count": Rule("cabundle", f"array of 1..{MAX_CABUNDLE} entries",
                           _SYNTAX + " \"not allowed to have 0 elements\" (upper bound: nitrodeck)"),
    "cabundle-size": Rule("cabundle[N]", f"byte strings of 1..{MAX_CERT} bytes", _SYNTAX + " $length ∈ [1, 1024]"),
    "public-key": Rule("public_key", f"null or a byte string of 1..{MAX_FIELD} bytes", _SYNTAX + " $length ∈ [1, 1024]"),
    "user-data": Rule("user_data", f"null or a byte string of 0..{MAX_FIELD} bytes",
                      _CDDL + " user_data = bytes .size (0..1024) (§3.2.2.2 says 512; the NSM writes 1024)"),
    "nonce": Rule("nonce", f"null or a byte string of 0..{MAX_FIELD} bytes",
                  _CDDL + " user_data = bytes .size (0..1024) (§3.2.2.2 says 512; the NSM writes 1024)"),
}


class AttestationError(NitrodeckError):
    """A document that is not a well-formed attestation document; ``where`` names the field, ``rule`` the rule."""

    code = "ND-ATTESTATION"

    def __init__(self, message: str, *, rule: str | None = None, hint: str | None = None,
                 where: str | None = None) -> None:
        super().__init__(message, hint=hint, where=where)
        self.rule = rule


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

    def issued(self) -> dt.datetime:
        """The timestamp as a UTC datetime (the parser guarantees it is in range)."""
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=self.timestamp)

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


def _fail(rule: str, message: str, where: str | None = None) -> AttestationError:
    return AttestationError(message, rule=rule, where=where or RULES[rule].field)


def _bytes(value: Any, rule: str, where: str, low: int, high: int) -> bytes:
    if not isinstance(value, bytes):
        raise _fail(rule, f"should be a byte string, got {type(value).__name__}", where)
    if not low <= len(value) <= high:
        raise _fail(rule, f"is {len(value)} bytes; allowed {low}..{high}", where)
    return value


def _optional(value: Any, rule: str, where: str, low: int) -> bytes | None:
    return None if value is None else _bytes(value, rule, where, low, MAX_FIELD)


def _uint(value: Any, rule: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(rule, f"should be an unsigned integer, got {type(value).__name__}", where)
    return value


def _pcrs(value: Any) -> dict[int, bytes]:
    if not isinstance(value, Mapping):
        raise _fail("pcrs-count", f"should be a map, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_PCRS:
        raise _fail("pcrs-count", f"has {len(value)} entries; allowed 1..{MAX_PCRS}")
    out: dict[int, bytes] = {}
    for index, data in value.items():
        index = _uint(index, "pcrs-index", "pcrs")
        if not 0 <= index < MAX_PCRS:
            raise _fail("pcrs-index", f"index {index} is outside 0..{MAX_PCRS - 1}")
        out[index] = _bytes(data, "pcrs-size", f"pcrs[{index}]", PCR_SIZE, PCR_SIZE)
    return out


def _envelope(sign1: cose.Sign1) -> None:
    try:
        header = sign1.protected_header()
    except cose.CoseError as exc:
        raise _fail("cose-protected", exc.message) from exc
    if header != PROTECTED or type(header[1]) is not int:  # -35.0 == -35 in Python; the CDDL says int
        raise _fail("cose-protected", f"protected header is {_short(header)}; must be {{1: -35}} (ES384)")
    if sign1.unprotected:
        raise _fail("cose-unprotected", f"unprotected header has {len(sign1.unprotected)} entries; must be empty")
    if not 1 <= len(sign1.payload) <= MAX_PAYLOAD:
        raise _fail("payload-size", f"is {len(sign1.payload)} bytes; allowed 1..{MAX_PAYLOAD}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _payload_map(payload: bytes) -> Mapping[Any, Any]:
    try:
        obj = cose.loads_exact(payload, where="payload")
    except cose.CoseError as exc:
        # bytes after the map inside the payload bstr break the payload's own rule, not a generic one
        rule = "payload-map" if exc.rule == "cbor-single-item" else exc.rule
        raise AttestationError(exc.message, rule=rule, where="payload") from exc
    if not isinstance(obj, Mapping):
        raise _fail("payload-map", f"payload should be a map, got {type(obj).__name__}")
    unknown = [k for k in obj if k not in KEYS]
    if unknown:
        raise _fail("payload-keys", f"unknown key(s): {', '.join(_short(k) for k in unknown[:3])}")
    return obj


def parse_document(data: bytes) -> AttestationDoc:
    """Decode and check a document against every rule in RULES. Raises AttestationError naming the field and rule."""
    if not isinstance(data, bytes | bytearray):
        raise _fail("document-size", "document must be bytes")
    data = bytes(data)
    if len(data) > MAX_DOCUMENT:
        raise _fail("document-size", f"document is {len(data)} bytes; limit {MAX_DOCUMENT}")
    try:
        sign1 = cose.decode(data, max_size=MAX_DOCUMENT)
    except cose.CoseError as exc:
        raise AttestationError(exc.message, rule=exc.rule, where=exc.where or "COSE_Sign1") from exc
    _envelope(sign1)
    body = _payload_map(sign1.payload)
    missing = [k for k in KEYS if k not in OPTIONAL and body.get(k) is None]
    if missing:
        raise _fail("payload-required", f"missing or null field(s): {', '.join(missing)}")

    module_id = body["module_id"]
    if not isinstance(module_id, str) or not 1 <= len(module_id) <= MAX_MODULE_ID:
        raise _fail("module-id", f"should be a text string of 1..{MAX_MODULE_ID} characters")
    digest = body["digest"]
    if digest != DIGEST or not isinstance(digest, str):
        raise _fail("digest", f"is {_short(digest)[:30]}; must be \"{DIGEST}\"")
    timestamp = _uint(body["timestamp"], "timestamp", "timestamp")
    if not 0 < timestamp <= MAX_TIMESTAMP_MS:
        raise _fail("timestamp", f"{timestamp} is outside 1..{MAX_TIMESTAMP_MS} ms (1970 .. 9999-12-31)")
    cabundle = body["cabundle"]
    if isinstance(cabundle, str | bytes) or not isinstance(cabundle, Sequence):
        raise _fail("cabundle-count", f"should be an array, got {type(cabundle).__name__}")
    if not 1 <= len(cabundle) <= MAX_CABUNDLE:
        raise _fail("cabundle-count", f"has {len(cabundle)} entries; allowed 1..{MAX_CABUNDLE}")
    return AttestationDoc(
        module_id=module_id,
        digest=digest,
        timestamp=timestamp,
        pcrs=_pcrs(body["pcrs"]),
        certificate=_bytes(body["certificate"], "certificate-size", "certificate", 1, MAX_CERT),
        cabundle=tuple(_bytes(c, "cabundle-size", f"cabundle[{i}]", 1, MAX_CERT) for i, c in enumerate(cabundle)),
        public_key=_optional(body.get("public_key"), "public-key", "public_key", 1),
        user_data=_optional(body.get("user_data"), "user-data", "user_data", 0),
        nonce=_optional(body.get("nonce"), "nonce", "nonce", 0),
        sign1=sign1,
    )
