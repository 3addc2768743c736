"""The wallet key's forms: SPKI and public hex for display, the raw scalar KMS encrypts, loading it."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from core.kms.client import KmsError

# --- wallet keys ------------------------------------------------------------------------------------


def wallet_public_hex(key: ec.EllipticCurvePrivateKey) -> str:
    """Compressed SEC1 public key, the form wallets show."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
        .hex()
    )


def wallet_spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def raw_scalar(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_numbers().private_value.to_bytes(32, "big")


def load_wallet_key(data: bytes, where: str) -> ec.EllipticCurvePrivateKey:
    """A secp256k1 key from raw 32 bytes, 64 hex digits, PEM or DER. Errors never quote the input."""
    stripped = data.strip()
    key: object = None
    try:
        if len(data) == 32:
            key = ec.derive_private_key(int.from_bytes(data, "big"), ec.SECP256K1())
        elif len(stripped) in (64, 66) and all(c in b"0123456789abcdefABCDEFx" for c in stripped):
            text = stripped.decode()
            key = ec.derive_private_key(int(text.removeprefix("0x"), 16), ec.SECP256K1())
        elif stripped.startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(stripped, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KmsError("the key file does not hold a usable private key", where=where) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256K1):
        raise KmsError("the key file does not hold a secp256k1 private key", where=where)
    return key

