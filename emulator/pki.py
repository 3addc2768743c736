"""The emulator's PKI: a look-alike of the Nitro attestation chain, under a root that says "emulator".

The chain has the shape of the real one (root -> regional -> zonal -> instance -> leaf, P-384,
ecdsa-with-SHA384, the same pathlens, key usages and lifetimes), so verifiers exercise the same code
paths. Its root is ``CN=emulator.nitro-enclaves, OU=nitrodeck emulator, O=nitrodeck, C=US``. It can
never be mistaken for AWS's ``CN=aws.nitro-enclaves`` root, and nitrodeck trusts it only when the
emulator backend is active or an operator passes it explicitly.

**The root key is a non-secret TEST CA key.** It sits in ``<etc>/emulator-root-ca.key`` (mode 0600)
so every supervisor of one nitrodeck home signs under the same root; anyone who can read that file
can forge emulator attestation documents, which is fine because they prove nothing. Intermediates and
leaves live only in the memory of the process that made them.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core import home
from core.attest.trust import EMULATOR_ROOT_CERT_FILE, EMULATOR_ROOT_KEY_FILE
from core.errors import NitrodeckError

ROOT_LIFETIME = dt.timedelta(days=30 * 365)
REGIONAL_LIFETIME = dt.timedelta(days=20)
ZONAL_LIFETIME = dt.timedelta(days=5)
INSTANCE_LIFETIME = dt.timedelta(days=1)
LEAF_LIFETIME = dt.timedelta(hours=3, seconds=3)  # exactly what real leaves carry
#: a leaf is replaced when less than this is left, so a fresh document is never near expiry
LEAF_REFRESH = dt.timedelta(minutes=10)
#: an intermediate is replaced when it could no longer cover a whole leaf lifetime
INTERMEDIATE_REFRESH = LEAF_LIFETIME + dt.timedelta(hours=1)
#: intermediates start slightly in the past so small clock differences between processes don't matter
BACKDATE = dt.timedelta(minutes=5)
LOCK_FILE = ".emulator-root.lock"
# (attribute, pathlen, lifetime) from the root down; the instance CA (pathlen 0) signs leaves
_LEVELS = (("regional", 2, REGIONAL_LIFETIME), ("zonal", 1, ZONAL_LIFETIME), ("instance", 0, INSTANCE_LIFETIME))
_MAX_PEM = 64 * 1024


class PkiError(NitrodeckError):
    code = "ND-EMU-PKI"


def _name(**parts: str) -> x509.Name:
    oids = {
        "CN": NameOID.COMMON_NAME,
        "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
        "O": NameOID.ORGANIZATION_NAME,
        "L": NameOID.LOCALITY_NAME,
        "ST": NameOID.STATE_OR_PROVINCE_NAME,
        "C": NameOID.COUNTRY_NAME,
    }
    # Real Nitro names list C first and CN last; keep that order.
    order = ["C", "ST", "L", "O", "OU", "CN"]
    return x509.Name([x509.NameAttribute(oids[k], parts[k]) for k in order if k in parts])


ROOT_SUBJECT = _name(CN="emulator.nitro-enclaves", OU="nitrodeck emulator", O="nitrodeck", C="US")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _ca_usage(cert_sign_only: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign_only,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=not cert_sign_only,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class Issued:
    """A certificate with its key, as held in memory by the process that issued it."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def remaining(self, now: dt.datetime) -> dt.timedelta:
        return self.cert.not_valid_after_utc - now


@dataclass(frozen=True)
class LeafSigner:
    """What the NSM needs to sign one document: the leaf key, its certificate and the cabundle (root first)."""

    key: ec.EllipticCurvePrivateKey
    certificate: bytes
    cabundle: tuple[bytes, ...]
    not_after: dt.datetime


def _make_root(now: dt.datetime) -> Issued:
    key = _new_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(ROOT_SUBJECT)
        .issuer_name(ROOT_SUBJECT)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + ROOT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(_ca_usage(cert_sign_only=False), critical=True)
        .sign(key, hashes.SHA384())
    )
    return Issued(cert, key)


def _make_ca(
    issuer: Issued, subject: x509.Name, pathlen: int, lifetime: dt.timedelta, now: dt.datetime, cert_sign_only: bool
) -> Issued:
    key = _new_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=pathlen), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_ca_usage(cert_sign_only), critical=True)
    )
    if pathlen > 0:  # AWS's regional and zonal CAs name a CRL (nobody checks it: "We do not use CRL")
        url = f"http://crl.emulator.nitro-enclaves.invalid/crl/{uuid.uuid4()}.crl"
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)
        cert = cert.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    return Issued(cert.sign(issuer.key, hashes.SHA384()), key)


def enclave_serial_part(module_id: str) -> int:
    """The 64-bit enclave id in a module id ``i-<...>-enc<16 hex>``; a stable hash for other ids."""
    match = re.search(r"-enc([0-9a-fA-F]{1,16})$", module_id)  # nitro-cli prints the u64 unpadded
    if match:
        return int(match.group(1), 16)
    return int.from_bytes(hashlib.sha256(module_id.encode()).digest()[:8], "big")


def _make_leaf(issuer: Issued, module_id: str, region: str, now: dt.datetime) -> Issued:
    key = _new_key()
    subject = _name(
        CN=f"{module_id}.{region}.aws",
        OU="AWS",
        O="nitrodeck emulator",
        L="Seattle",
        ST="Washington",
        C="US",
    )
    serial = (enclave_serial_part(module_id) << 64) | int(now.timestamp())
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial or 1)
        .not_valid_before(now)
        .not_valid_after(now + LEAF_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=False)
        .sign(issuer.key, hashes.SHA384())
    )
    return Issued(cert, key)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write through a temporary name and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_limited(path: Path) -> bytes:
    with path.open("rb") as fh:
        data = fh.read(_MAX_PEM + 1)
    if len(data) > _MAX_PEM:
        raise PkiError(f"{path.name} is larger than {_MAX_PEM} bytes", where=str(path))
    return data


class EmulatorPki:
    """The root (shared on disk) plus this process's intermediates and per-enclave leaves."""

    def __init__(self, root: Issued, etc_dir: Path, region: str = "us-east-1") -> None:
        self.root = root
        self.etc_dir = etc_dir
        self.region = region
        self._lock = threading.Lock()
        self._regional: Issued | None = None
        self._zonal: Issued | None = None
        self._instance: Issued | None = None
        self._leaves: dict[str, Issued] = {}
        self._tag = os.urandom(8).hex()
        self._instance_id: str | None = None  # from the first module id: the instance CA's name

    # --- the root -------------------------------------------------------------------------------

    @classmethod
    def load_or_create(cls, etc_dir: Path, region: str = "us-east-1") -> EmulatorPki:
        """Load the emulator root from ``etc_dir``, creating it once (under a file lock) if absent."""
        home.ensure(etc_dir)  # private, parents included (mkdir's parents would be 0755)
        cert_path = etc_dir / EMULATOR_ROOT_CERT_FILE
        key_path = etc_dir / EMULATOR_ROOT_KEY_FILE
        lock_fd = os.open(etc_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # Concurrent supervisors serialize here, so exactly one of them creates the root.
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            if cert_path.exists() and key_path.exists():
                root = cls._load_root(cert_path, key_path)
            else:
                root = _make_root(_now())
                pem_key = root.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                _write_private(key_path, pem_key, 0o600)
                _write_private(cert_path, root.cert.public_bytes(serialization.Encoding.PEM), 0o644)
        finally:
            os.close(lock_fd)
        return cls(root, etc_dir, region)

    @staticmethod
    def _load_root(cert_path: Path, key_path: Path) -> Issued:
        try:
            cert = x509.load_pem_x509_certificate(_read_limited(cert_path))
            key = serialization.load_pem_private_key(_read_limited(key_path), password=None)
        except ValueError as exc:
            raise PkiError(
                f"cannot read the emulator root: {exc}",
                where=str(cert_path.parent),
                hint="delete the emulator-root-ca.* files to make a new test root",
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.subject != ROOT_SUBJECT:
            raise PkiError("the emulator root files are not an emulator root", where=str(cert_path.parent))
        return Issued(cert, key)

    @property
    def root_der(self) -> bytes:
        return self.root.der

    def root_pem(self) -> bytes:
        return self.root.cert.public_bytes(serialization.Encoding.PEM)

    def root_fingerprint(self) -> str:
        """DER SHA-256 fingerprint, upper-case hex (the form AWS publishes for its root)."""
        return hashlib.sha256(self.root_der).hexdigest().upper()

    # --- intermediates and leaves ---------------------------------------------------------------

    def _level_name(self, level: str) -> x509.Name:
        if level == "regional":
            return _name(CN=f"{self._tag}.{self.region}.emulator.nitro-enclaves", OU="nitrodeck emulator",
                         O="nitrodeck", C="US")
        prefix = f"{self._tag}.zonal" if level == "zonal" else (self._instance_id or f"i-{self._tag}")
        return _name(CN=f"{prefix}.{self.region}.emulator.nitro-enclaves", OU="nitrodeck emulator",
                     O="nitrodeck", L="Seattle", ST="WA", C="US")

    def _intermediates(self, now: dt.datetime) -> Issued:
        """The instance CA, re-making any expiring level and everything below it."""
        issuer = self.root
        renew = False
        for level, pathlen, lifetime in _LEVELS:
            current: Issued | None = getattr(self, f"_{level}")
            if renew or current is None or current.remaining(now) < INTERMEDIATE_REFRESH:
                current = _make_ca(issuer, self._level_name(level), pathlen, lifetime, now,
                                   cert_sign_only=(pathlen == 0))
                setattr(self, f"_{level}", current)
                renew = True
            issuer = current
        if renew:
            # leaves hang off the old instance CA: drop them so every chain stays consistent
            self._leaves.clear()
        return issuer

    def leaf_for(self, module_id: str, now: dt.datetime | None = None) -> LeafSigner:
        """The signing leaf for one enclave: reused for its 3-hour life, renewed near the end."""
        now = now or _now()
        with self._lock:
            if self._instance_id is None:
                match = re.fullmatch(r"(i-[0-9a-fA-F]{1,32})-enc[0-9a-fA-F]{1,16}", module_id)
                self._instance_id = match.group(1) if match else None
            instance = self._intermediates(now)
            leaf = self._leaves.get(module_id)
            if leaf is None or leaf.remaining(now) < LEAF_REFRESH:
                leaf = _make_leaf(instance, module_id, self.region, now)
                self._leaves[module_id] = leaf
            assert self._regional is not None and self._zonal is not None
            bundle = (self.root.der, self._regional.der, self._zonal.der, instance.der)
            return LeafSigner(leaf.key, leaf.der, bundle, leaf.cert.not_valid_after_utc)
