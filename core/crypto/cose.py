"""COSE_Sign1 (RFC 9052) as Nitro uses it: EIF signatures and attestation documents.

Only the single-signer form with an empty external AAD. Signatures are raw r||s (not DER), as COSE
requires. The message is untagged on output (as the NSM and nitro-cli write it); tag 18 is accepted
on input.
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


class CoseError(NitrodeckError):
    code = "ND-COSE"


@dataclass(frozen=True)
class Sign1:
    protected: bytes  # the serialized protected header bstr, kept verbatim: it is signed
    unprotected: dict[Any, Any]
    payload: bytes  # kept verbatim: the signature covers these exact bytes
    signature: bytes
    tagged: bool = False

    @property
    def algorithm(self) -> int:
        try:
            header = cbor2.loads(self.protected) if self.protected else {}
        except Exception as exc:  # cbor2 raises several types on garbage
            raise CoseError(f"protected header is not CBOR: {exc}", where="COSE_Sign1[0]") from exc
        if not isinstance(header, dict) or 1 not in header:
            raise CoseError("protected header has no algorithm (label 1)", where="COSE_Sign1[0]")
        alg = header[1]
        if alg not in ALGORITHMS:
            raise CoseError(f"unsupported COSE algorithm {alg!r}", where="COSE_Sign1[0]")
        return int(alg)

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
    """Parse a COSE_Sign1 (tagged or not). Raises CoseError naming what is wrong."""
    if len(data) > max_size:
        raise CoseError(f"COSE_Sign1 is {len(data)} bytes, more than the {max_size}-byte limit")
    try:
        obj = cbor2.loads(data)
    except Exception as exc:
        raise CoseError(f"not CBOR: {exc}", where="COSE_Sign1") from exc
    tagged = False
    if isinstance(obj, cbor2.CBORTag):
        if obj.tag != COSE_SIGN1_TAG:
            raise CoseError(f"CBOR tag {obj.tag}, expected {COSE_SIGN1_TAG} (COSE_Sign1)", where="COSE_Sign1")
        obj, tagged = obj.value, True
    if isinstance(obj, tuple):  # cbor2 6 decodes tagged contents as immutable tuples
        obj = list(obj)
    if not isinstance(obj, list) or len(obj) != 4:
        raise CoseError("expected an array of 4 items", where="COSE_Sign1")
    protected, unprotected, payload, signature = obj
    for idx, (value, typ) in enumerate(((protected, bytes), (unprotected, Mapping), (payload, bytes), (signature, bytes))):
        if not isinstance(value, typ):
            raise CoseError(f"item {idx} should be {typ.__name__}, got {type(value).__name__}", where=f"COSE_Sign1[{idx}]")
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
