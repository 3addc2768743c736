"""The enclave's signing keys: made inside the enclave, used inside it, never exported.

At start-up both keys come from one seed: HKDF-SHA256 over 32 bytes of the OS RNG and 32 bytes of
NSM GetRandom. Mixing the two means neither a weak guest kernel RNG early at boot nor a single
faulty source alone decides the keys. A secp256k1 key released from KMS (see enclave_app.kms)
may later replace the generated secp256k1 key with :meth:`KeyStore.set_signing_key`.

Nothing here has a way to serialise a private key; ``repr`` shows public facts only.
"""

from __future__ import annotations

import os
import threading

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.errors import NitrodeckError

SECP256K1 = "secp256k1"
ED25519 = "ed25519"
SCHEMES = (SECP256K1, ED25519)
# order of the secp256k1 group
_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class KeyStoreError(NitrodeckError):
    """A key could not be made, loaded or used."""

    code = "ND-KEYS"


def _derive(seed: bytes, label: bytes, length: int) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=None, info=b"nitrodeck/enclave-key/" + label
    ).derive(seed)


def _spki(key: ec.EllipticCurvePublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class KeyStore:
    """The payload's two keys. Thread-safe: the secp256k1 key may be swapped while requests run."""

    def __init__(self, secp256k1: ec.EllipticCurvePrivateKey, ed25519: Ed25519PrivateKey) -> None:
        if not isinstance(secp256k1.curve, ec.SECP256K1):
            raise KeyStoreError("the ECDSA signing key must be on secp256k1", where="keys")
        self._lock = threading.Lock()
        self._secp = secp256k1
        self._ed = ed25519
        self._source = "generated"

    @classmethod
    def generate(cls, nsm_random: bytes) -> KeyStore:
        if len(nsm_random) < 16:
            raise KeyStoreError(f"NSM returned only {len(nsm_random)} random bytes", where="keys")
        seed = os.urandom(32) + nsm_random
        # 48 bytes reduced mod n-1 keeps the bias below 2^-128.
        scalar = int.from_bytes(_derive(seed, b"secp256k1", 48), "big") % (_N - 1) + 1
        secp = ec.derive_private_key(scalar, ec.SECP256K1())
        ed = Ed25519PrivateKey.from_private_bytes(_derive(seed, b"ed25519", 32))
        return cls(secp, ed)

    @property
    def key_source(self) -> str:
        """``generated`` (made at start-up) or ``kms`` (released by KMS after attestation)."""
        return self._source

    def set_signing_key(self, private_key: ec.EllipticCurvePrivateKey | bytes, source: str = "kms") -> None:
        """Replace the secp256k1 key: a key object, DER (PKCS#8 or SEC1), or a raw 32-byte scalar."""
        key: object
        if isinstance(private_key, bytes | bytearray):
            raw = bytes(private_key)
            if len(raw) == 32:
                scalar = int.from_bytes(raw, "big")
                if not 0 < scalar < _N:
                    raise KeyStoreError("the secp256k1 scalar is out of range", where="keys.set_signing_key")
                key = ec.derive_private_key(scalar, ec.SECP256K1())
            else:
                try:
                    key = serialization.load_der_private_key(raw, password=None)
                except (ValueError, TypeError) as exc:
                    # the exception text never includes key bytes, but say nothing specific anyway
                    raise KeyStoreError(
                        "the released key is not a DER private key", where="keys.set_signing_key"
                    ) from exc
        else:
            key = private_key
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256K1):
            raise KeyStoreError("the released key is not a secp256k1 EC key", where="keys.set_signing_key")
        with self._lock:
            self._secp = key
            self._source = source

    def public_key_der(self, scheme: str) -> bytes:
        with self._lock:
            if scheme == SECP256K1:
                return _spki(self._secp.public_key())
            if scheme == ED25519:
                return _spki(self._ed.public_key())
        raise KeyStoreError(
            f"unknown scheme {scheme[:32]!r}", where="keys", hint=f"use one of {', '.join(SCHEMES)}"
        )

    def public_keys(self) -> dict[str, bytes]:
        return {scheme: self.public_key_der(scheme) for scheme in SCHEMES}

    def sign(self, scheme: str, payload: bytes) -> tuple[bytes, bytes]:
        """(signature, public key DER) taken under one lock, so a key swap cannot split them."""
        with self._lock:
            if scheme == SECP256K1:
                return self._secp.sign(payload, ec.ECDSA(hashes.SHA256())), _spki(self._secp.public_key())
            if scheme == ED25519:
                return self._ed.sign(payload), _spki(self._ed.public_key())
        raise KeyStoreError(
            f"unknown scheme {scheme[:32]!r}", where="keys", hint=f"use one of {', '.join(SCHEMES)}"
        )

    def __repr__(self) -> str:
        return f"KeyStore(schemes={SCHEMES}, key_source={self._source!r})"
