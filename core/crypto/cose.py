"""COSE_Sign1 (RFC 9052) as Nitro uses it: EIF signatures and attestation documents.

Only the single-signer form with an empty external AAD. Signatures are raw r||s (not DER), as COSE
requires. The message is untagged on output (as the NSM and nitro-cli write it); tag 18 is accepted
on input, once. Input is exactly one CBOR item: bytes after it, any other tag (outside or inside),
map keys other than integers and text, and duplicate map keys are refused before cbor2 sees the
bytes, by a bounded walk of the encoding (:func:`item_end`), so that no two readers of the same
bytes can disagree about what they hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from core.errors import NitrodeckError

COSE_SIGN1_TAG = 18
# COSE algorithm id -> (hash, curve size in bytes)
ALGORITHMS: dict[int, tuple[type[hashes.HashAlgorithm], int]] = {
    -7: (hashes.SHA256, 32),  # ES256
    -35: (hashes.SHA384, 48),  # ES384
    -36: (hashes.SHA512, 66),  # ES512
}
_CURVE_ALG = {"secp256r1": -7, "secp384r1": -35, "secp521r1": -36}


#: nesting deeper than this is refused (real documents nest 3 levels; cbor2 recursion stays small)
MAX_DEPTH = 16


class CoseError(NitrodeckError):
    code = "ND-COSE"

    def __init__(self, message: str, *, rule: str | None = None, hint: str | None = None,
                 where: str | None = None) -> None:
        super().__init__(message, hint=hint, where=where)
        #: the id of the format rule that failed (docs/attestation.md lists them)
        self.rule = rule


# --- a bounded walk over CBOR encodings -------------------------------------------------------------


def _head(data: bytes, pos: int, where: str) -> tuple[int, int, int | None, int]:
    """(major type, additional info, argument or None for indefinite, position after the head)."""
    if pos >= len(data):
        raise CoseError("truncated CBOR", rule="cbor-well-formed", where=where)
    first = data[pos]
    major, info = first >> 5, first & 0x1F
    pos += 1
    if info < 24:
        return major, info, info, pos
    if info <= 27:
        size = 1 << (info - 24)
        if pos + size > len(data):
            raise CoseError("truncated CBOR", rule="cbor-well-formed", where=where)
        return major, info, int.from_bytes(data[pos:pos + size], "big"), pos + size
    if info == 31 and major in (2, 3, 4, 5, 7):
        return major, info, None, pos
    raise CoseError(f"reserved CBOR head byte 0x{first:02x}", rule="cbor-well-formed", where=where)


def _string_end(data: bytes, pos: int, major: int, length: int | None, where: str) -> tuple[int, bytes]:
    """End of a byte/text string whose head ends at ``pos``, and its bytes (chunks joined)."""
    if length is not None:
        if pos + length > len(data):
            raise CoseError("truncated CBOR string", rule="cbor-well-formed", where=where)
        return pos + length, data[pos:pos + length]
    chunks: list[bytes] = []
    while True:
        if pos < len(data) and data[pos] == 0xFF:
            return pos + 1, b"".join(chunks)
        cmajor, _, clen, pos = _head(data, pos, where)
        if cmajor != major or clen is None:
            raise CoseError("bad chunk in an indefinite-length string", rule="cbor-well-formed", where=where)
        pos, chunk = _string_end(data, pos, major, clen, where)
        chunks.append(chunk)


def item_end(data: bytes, pos: int = 0, *, where: str = "CBOR", depth: int = 0) -> int:
    """Where the CBOR item starting at ``pos`` ends. Refuses tags, map keys that are not integers or
    text, duplicate keys, nesting deeper than MAX_DEPTH and truncation. Time is linear in the input:
    every item consumes at least one byte, so a huge claimed count fails at the end of the data."""
    if depth > MAX_DEPTH:
        raise CoseError(f"nested deeper than {MAX_DEPTH} levels", rule="cbor-well-formed", where=where)
    major, info, arg, pos = _head(data, pos, where)
    if major in (0, 1):
        return pos
    if major in (2, 3):
        return _string_end(data, pos, major, arg, where)[0]
    if major == 6:
        raise CoseError(f"CBOR tag {arg} inside the message; the format has no tags there",
                        rule="cbor-no-tags", where=where)
    if major == 7:
        if arg is None:
            raise CoseError("unexpected CBOR break", rule="cbor-well-formed", where=where)
        return pos
    count = 0
    keys: set[tuple[int, object]] = set()
    while arg is None or count < arg:
        if arg is None and pos < len(data) and data[pos] == 0xFF:
            return pos + 1
        if major == 5:
            kmajor, _, karg, kpos = _head(data, pos, where)
            if kmajor not in (0, 1, 3):
                raise CoseError("map key is not an integer or text", rule="cbor-map-keys", where=where)
            key: object = karg
            if kmajor == 3:
                _, raw = _string_end(data, kpos, 3, karg, where)
                key = raw
            if (kmajor, key) in keys:
                shown = key.decode("utf-8", "replace")[:40] if isinstance(key, bytes) else key
                raise CoseError(f"duplicate map key {shown!r}", rule="cbor-map-keys", where=where)
            keys.add((kmajor, key))
            pos = item_end(data, pos, where=where, depth=depth + 1)
        pos = item_end(data, pos, where=where, depth=depth + 1)
        count += 1
    return pos


def loads_exact(data: bytes, *, where: str) -> Any:
    """Decode ``data`` as exactly one tag-free CBOR item (see :func:`item_end`)."""
    end = item_end(data, 0, where=where)
    if end != len(data):
        raise CoseError(f"{len(data) - end} byte(s) after the CBOR item", rule="cbor-single-item", where=where)
    try:
        return cbor2.loads(data)
    except Exception as exc:  # noqa: BLE001 - e.g. invalid UTF-8 in a text string
        raise CoseError(f"not CBOR: {exc}", rule="cbor-well-formed", where=where) from exc


@dataclass(frozen=True)
class Sign1:
    protected: bytes  # the serialized protected header bstr, kept verbatim: it is signed
    unprotected: dict[Any, Any]
    payload: bytes  # kept verbatim: the signature covers these exact bytes
    signature: bytes
    tagged: bool = False

    @property
    def algorithm(self) -> int:
        header = self.protected_header()
        if 1 not in header:
            raise CoseError("protected header has no algorithm (label 1)", rule="cose-protected", where="COSE_Sign1[0]")
        alg = header[1]
        if isinstance(alg, bool) or alg not in ALGORITHMS:
            raise CoseError(f"unsupported COSE algorithm {alg!r}", rule="cose-protected", where="COSE_Sign1[0]")
        return int(alg)

    def protected_header(self) -> dict[Any, Any]:
        """The decoded protected header map (empty when the bstr is empty, as RFC 9052 allows)."""
        if not self.protected:
            return {}
        try:
            header = loads_exact(self.protected, where="COSE_Sign1[0]")
        except CoseError as exc:
            raise CoseError(f"protected header: {exc.message}", rule=exc.rule, where="COSE_Sign1[0]") from exc
        if not isinstance(header, dict):
            raise CoseError("protected header is not a map", rule="cose-protected", where="COSE_Sign1[0]")
        return header

    def to_bytes(self, tagged: bool = False) -> bytes:
        body = [self.protected, self.unprotected, self.payload, self.signature]
        return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, body) if tagged else body)

    def sig_structure(self) -> bytes:
        return cbor2.dumps(["Signature1", self.protected, b"", self.payload])

    def verify(self, public_key: ec.EllipticCurvePublicKey) -> bool:
        alg = self.algorithm
        hash_cls, size = ALGORITHMS[alg]
        if len(self.signature) != 2 * size:
            return False
        if public_key.curve.name != {-7: "secp256r1", -35: "secp384r1", -36: "secp521r1"}[alg]:
            return False
        r = int.from_bytes(self.signature[:size], "big")
        s = int.from_bytes(self.signature[size:], "big")
        try:
            public_key.verify(encode_dss_signature(r, s), self.sig_structure(), ec.ECDSA(hash_cls()))
        except InvalidSignature:
            return False
        return True


def decode(data: bytes, max_size: int = 64 * 1024) -> Sign1:
    """Parse exactly one COSE_Sign1 (untagged, or tag 18 once). Raises CoseError naming what is wrong."""
    where = "COSE_Sign1"
    if len(data) > max_size:
        raise CoseError(f"COSE_Sign1 is {len(data)} bytes, more than the {max_size}-byte limit",
                        rule="document-size", where=where)
    start, tagged = 0, False
    major, _, arg, after = _head(data, 0, where)
    if major == 6:
        if arg != COSE_SIGN1_TAG:
            raise CoseError(f"CBOR tag {arg}; only an untagged COSE_Sign1 or tag {COSE_SIGN1_TAG} is allowed",
                            rule="cose-tag", where=where)
        start, tagged = after, True
        if _head(data, start, where)[0] == 6:
            raise CoseError(f"a second tag after tag {COSE_SIGN1_TAG}; the tag may appear once",
                            rule="cose-tag", where=where)
    end = item_end(data, start, where=where)
    if end != len(data):
        raise CoseError(f"{len(data) - end} byte(s) after the COSE_Sign1; the document must be exactly one",
                        rule="cose-single-item", where=where)
    try:
        obj = cbor2.loads(data[start:])
    except Exception as exc:  # noqa: BLE001 - cbor2 raises several types on garbage (e.g. bad UTF-8)
        raise CoseError(f"not CBOR: {exc}", rule="cbor-well-formed", where=where) from exc
    if not isinstance(obj, list) or len(obj) != 4:
        raise CoseError("expected an array of 4 items", rule="cose-array", where=where)
    protected, unprotected, payload, signature = obj
    for idx, (value, typ) in enumerate(((protected, bytes), (unprotected, Mapping), (payload, bytes), (signature, bytes))):
        if not isinstance(value, typ):
            raise CoseError(f"item {idx} should be {typ.__name__}, got {type(value).__name__}", rule="cose-array",
                            where=f"COSE_Sign1[{idx}]")
    return Sign1(protected, dict(unprotected), payload, signature, tagged)


def sign(payload: bytes, private_key: ec.EllipticCurvePrivateKey) -> Sign1:
    """Sign ``payload`` with an EC key; the algorithm follows the curve (P-256/384/521)."""
    alg = _CURVE_ALG.get(private_key.curve.name)
    if alg is None:
        raise CoseError(f"unsupported curve {private_key.curve.name}")
    hash_cls, size = ALGORITHMS[alg]
    protected = cbor2.dumps({1: alg})
    unsigned = Sign1(protected, {}, payload, b"")
    der = private_key.sign(unsigned.sig_structure(), ec.ECDSA(hash_cls()))
    r, s = decode_dss_signature(der)
    return Sign1(protected, {}, payload, r.to_bytes(size, "big") + s.to_bytes(size, "big"))
