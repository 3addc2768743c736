"""Trust roots for attestation documents: the AWS Nitro root G1 built in, the emulator's root on request.

:func:`choose_roots` is the one place that decides what an operator's command trusts, and records why.

The AWS root is embedded (it is public) and its DER SHA-256 fingerprint is checked the first time it
is used, so an edit to this file cannot silently change what nitrodeck trusts. The emulator's root is
a test CA (see emulator/pki.py); :func:`emulator_root` loads it only when a caller asks for it, and
nothing here adds it to the default set.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from core import home
from core.errors import NitrodeckError
from core.files import read_limited

AWS_ROOT_G1_SHA256 = "641A0321A3E244EFE456463195D606317ED7CDCC3C1756E09893F3C68F79BB5B"
AWS_ROOT_G1_PEM = b"""-----BEGIN CERTIFICATE-----
MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTEL
MAkGA1UEBhMCVVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYD
VQQDDBJhd3Mubml0cm8tZW5jbGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4
MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGQW1hem9uMQwwCgYDVQQL
DANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2MBAGByqGSM49AgEG
BSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSksfbb
48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZE
h8l5YoQwTcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkF
R+eWw5b6cp3PmanfS5YwDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYC
MQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5W2OpYow9OYCVRaEevL8uO1XYru5xtMPW
rfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/nNr12UO8Yfwr6wPLb+6N
IwLz3/Y=
-----END CERTIFICATE-----
"""

#: file names of the emulator's test CA inside the emulator's etc folder (emulator/pki.py writes them)
EMULATOR_ROOT_CERT_FILE = "emulator-root-ca.pem"
EMULATOR_ROOT_KEY_FILE = "emulator-root-ca.key"
MAX_PEM_FILE = 64 * 1024


class TrustError(NitrodeckError):
    code = "ND-TRUST"


@dataclass(frozen=True)
class TrustRoot:
    """A pinned root: matched against cabundle[0] by DER SHA-256 fingerprint."""

    name: str
    cert: x509.Certificate
    der: bytes
    fingerprint: str  # upper-case hex SHA-256 of the DER

    @classmethod
    def from_cert(cls, name: str, cert: x509.Certificate) -> TrustRoot:
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(name, cert, der, hashlib.sha256(der).hexdigest().upper())


@functools.cache
def aws_root() -> TrustRoot:
    root = TrustRoot.from_cert("aws-nitro-enclaves-root-g1", x509.load_pem_x509_certificate(AWS_ROOT_G1_PEM))
    if root.fingerprint != AWS_ROOT_G1_SHA256:
        raise TrustError("the built-in AWS Nitro root does not match its pinned fingerprint", where="core/trust.py")
    return root


def default_roots() -> list[TrustRoot]:
    """What real mode trusts: the AWS Nitro root G1 and nothing else."""
    return [aws_root()]


def load_root_pem(path: Path, name: str | None = None) -> TrustRoot:
    """An operator-supplied root certificate (PEM or DER file)."""
    data = read_limited(path, MAX_PEM_FILE)
    try:
        if b"-----BEGIN" in data:
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise TrustError(f"not an X.509 certificate: {exc}", where=str(path)) from exc
    return TrustRoot.from_cert(name or path.name, cert)


def emulator_root_path(etc_dir: Path | None = None) -> Path:
    return (etc_dir or home.emulator_etc()) / EMULATOR_ROOT_CERT_FILE


_emulator_cache: dict[Path, tuple[tuple[int, int], TrustRoot]] = {}


def emulator_root(etc_dir: Path | None = None) -> TrustRoot | None:
    """The emulator's test root of this nitrodeck home, or None when no emulator has made one yet."""
    path = emulator_root_path(etc_dir)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    # verifiers in the emulated KMS call this per request: re-read only when the file changed
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _emulator_cache.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    root = load_root_pem(path, "nitrodeck-emulator-test-root")
    _emulator_cache[path] = (stamp, root)
    return root


# --- what a command trusts, and why ------------------------------------------------------------------


@dataclass(frozen=True)
class TrustChoice:
    """The roots a verification trusts, each with the reason, plus notes on what was not trusted."""

    roots: list[TrustRoot]
    reasons: list[str]  # one per root, same order
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{root.name} ({why})" for root, why in zip(self.roots, self.reasons, strict=True)] + [
            f"note: {note}" for note in self.notes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "roots": [{"name": r.name, "sha256": r.fingerprint, "why": why}
                      for r, why in zip(self.roots, self.reasons, strict=True)],
            "notes": list(self.notes),
        }


def choose_roots(
    *,
    extra: Sequence[Path] = (),
    emulator_flag: bool = False,
    backend: str | None = None,
    backend_chosen_by: str | None = None,
    emulated_enclave: bool = False,
    etc_dir: Path | None = None,
) -> TrustChoice:
    """AWS alone, plus what the operator asked for: ``extra`` root files (--trust-root), the emulator
    root for ``emulator_flag`` (--trust emulator) or for the emulator backend chosen by flag or
    environment. An emulator backend chosen automatically adds nothing: that is a laptop without
    nitro-cli, where operators check production documents. ``emulated_enclave`` (sign, attest: the
    document comes from an enclave the emulator runs) trusts the emulator root however it was chosen."""
    aws = aws_root()
    roots, reasons, notes = [aws], ["built in: AWS Nitro Enclaves root G1"], []
    for path in extra:
        roots.append(load_root_pem(path))
        reasons.append(f"--trust-root {path}")
    why = None
    if emulated_enclave:
        why = "the enclave is emulated (emulator backend)"
    elif emulator_flag:
        why = "--trust emulator"
    elif backend == "emulator" and backend_chosen_by == "flag":
        why = "--backend emulator"
    elif backend == "emulator" and backend_chosen_by == "env":
        why = "NITRODECK_BACKEND=emulator"
    if why is not None:
        emulator = emulator_root(etc_dir)
        if emulator is None:
            notes.append(f"the emulator root was requested ({why}) but this home has none yet")
        elif emulator.fingerprint not in {r.fingerprint for r in roots}:
            roots.append(emulator)
            reasons.append(why)
    elif backend == "emulator":
        notes.append("the emulator backend was chosen automatically; its test root is not trusted "
                     "(ask with --trust emulator or --backend emulator)")
    return TrustChoice(roots, reasons, notes)
