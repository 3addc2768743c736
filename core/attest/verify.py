"""Verify a Nitro attestation document and check it against a policy, as a checklist.

``verify()`` never raises on a bad document: it returns a :class:`VerificationReport` whose checks
say what passed, what failed and why (structure, signature, root, chain, validity, each expected
PCR, nonce, user_data, public_key, age). The signature is checked over the original payload bytes,
never a re-encoding. The chain runs leaf -> cabundle reversed -> a pinned root, matched by DER
SHA-256 fingerprint. Real mode trusts only the AWS root; the emulator's test root only when asked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from core.attest import trust
from core.attest.document import PCR_SIZES, AttestationDoc, AttestationError, parse_document
from core.attest.trust import TrustRoot
from core.checks import Check, all_passed
from core.crypto.cose import CoseError

__all__ = [
    "AttestationDoc",
    "AttestationError",
    "Policy",
    "VerificationReport",
    "parse_document",
    "pcrs_from_json",
    "verify",
]

ES384 = -35
#: PCRs that a debug-mode enclave reports as all zeros
DEBUG_ZERO_PCRS = (0, 1, 2, 8)
#: a document may claim a time this far after the verifier's clock (clock skew) before age fails
FUTURE_SKEW = dt.timedelta(seconds=60)
_CACHE_SIZE = 128


@dataclass(frozen=True)
class Policy:
    """What the verifier expects of the document, beyond a valid signature and chain."""

    pcrs: Mapping[int, str] = field(default_factory=dict)  # index -> lower-case hex
    nonce: bytes | None = None
    user_data: bytes | None = None
    public_key: bytes | None = None
    max_age: float | None = None  # seconds between the document's timestamp and the verification time


@dataclass
class VerificationReport:
    ok: bool
    checks: list[Check]
    document: AttestationDoc | None

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [c.to_dict() for c in self.checks],
            "document": self.document.to_dict() if self.document else None,
        }


# --- chain ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """Validity of one certificate, kept with a cached chain so each verification can re-check dates."""

    label: str
    not_before: dt.datetime
    not_after: dt.datetime


class _ChainFailure(Exception):
    pass


_chain_cache: OrderedDict[bytes, tuple[_Window, ...]] = OrderedDict()
_cache_lock = threading.Lock()


def clear_chain_cache() -> None:
    with _cache_lock:
        _chain_cache.clear()


def _load(der: bytes, label: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise _ChainFailure(f"{label} is not a DER X.509 certificate ({exc})") from exc


def _ext(cert: x509.Certificate, cls: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # a malformed extension
        raise _ChainFailure(f"unreadable extension: {exc}") from exc


def _check_chain(doc: AttestationDoc, root: TrustRoot) -> tuple[_Window, ...]:
    """Walk leaf -> cabundle[N-1] .. cabundle[1] -> pinned root. Returns the validity windows."""
    labels = ["certificate"] + [f"cabundle[{i}]" for i in range(len(doc.cabundle) - 1, 0, -1)]
    ders = [doc.certificate] + [doc.cabundle[i] for i in range(len(doc.cabundle) - 1, 0, -1)]
    certs = [_load(d, label) for d, label in zip(ders, labels, strict=True)] + [root.cert]
    labels.append(f"root {root.name}")
    for index in range(len(certs) - 1):
        child, issuer = certs[index], certs[index + 1]
        try:
            child.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
            reason = str(exc) or type(exc).__name__
            raise _ChainFailure(f"{labels[index]} is not signed by {labels[index + 1]}: {reason}") from exc
    leaf = certs[0]
    leaf_bc = _ext(leaf, x509.BasicConstraints)
    if leaf_bc is not None and leaf_bc.ca:
        raise _ChainFailure("certificate (leaf) is a CA")
    leaf_ku = _ext(leaf, x509.KeyUsage)
    if leaf_ku is None or not leaf_ku.digital_signature:
        raise _ChainFailure("certificate (leaf) lacks keyUsage digitalSignature")
    for index in range(1, len(certs)):
        cert, label = certs[index], labels[index]
        bc = _ext(cert, x509.BasicConstraints)
        if bc is None or not bc.ca:
            raise _ChainFailure(f"{label} is not a CA (basicConstraints)")
        below = index - 1  # CA certificates between this one and the leaf
        if bc.path_length is not None and below > bc.path_length:
            raise _ChainFailure(f"{label} allows {bc.path_length} CA(s) below it, the chain has {below}")
        ku = _ext(cert, x509.KeyUsage)
        if ku is None or not ku.key_cert_sign:
            raise _ChainFailure(f"{label} lacks keyUsage keyCertSign")
    return tuple(_Window(label, c.not_valid_before_utc, c.not_valid_after_utc) for c, label in zip(
        certs, labels, strict=True))


def _cached_chain(doc: AttestationDoc, root: TrustRoot) -> tuple[_Window, ...]:
    """Chain checks are pure functions of the DER bytes, so successes are cached; failures never are."""
    key = hashlib.sha256(b"".join(
        len(d).to_bytes(4, "big") + d for d in (doc.certificate, *doc.cabundle, root.der)
    )).digest()
    with _cache_lock:
        hit = _chain_cache.get(key)
        if hit is not None:
            _chain_cache.move_to_end(key)
            return hit
    windows = _check_chain(doc, root)
    with _cache_lock:
        _chain_cache[key] = windows
        while len(_chain_cache) > _CACHE_SIZE:
            _chain_cache.popitem(last=False)
    return windows


# --- the checks -----------------------------------------------------------------------------------


def _signature_check(doc: AttestationDoc) -> Check:
    try:
        alg = doc.sign1.algorithm
    except CoseError as exc:
        return Check("signature", False, f"protected header: {exc.message}")
    if alg != ES384:
        return Check("signature", False, f"protected header names algorithm {alg}, expected -35 (ES384)")
    try:
        leaf = x509.load_der_x509_certificate(doc.certificate)
        key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:  # e.g. a curve OID cryptography does not know
        return Check("signature", False, f"leaf certificate unreadable: {exc}")
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        return Check("signature", False, "leaf key is not ECDSA P-384")
    if not doc.sign1.verify(key):
        return Check("signature", False, "ES384 signature does not verify with the leaf certificate's key")
    return Check("signature", True, "ES384 over the payload, by the leaf certificate's key")


def _pick_root(doc: AttestationDoc, roots: Sequence[TrustRoot]) -> tuple[Check, TrustRoot | None]:
    fingerprint = hashlib.sha256(doc.cabundle[0]).hexdigest().upper()
    for root in roots:
        if hmac.compare_digest(root.fingerprint, fingerprint):
            return Check("root", True, f"cabundle[0] is the pinned root {root.name} (sha256 {fingerprint[:16]}…)"), root
    try:
        subject = x509.load_der_x509_certificate(doc.cabundle[0]).subject.rfc4514_string()
    except ValueError:
        subject = "unreadable certificate"
    trusted = ", ".join(r.name for r in roots) or "none"
    detail = f"cabundle[0] ({subject}, sha256 {fingerprint[:16]}…) is not a trusted root (trusted: {trusted})"
    if "CN=emulator.nitro-enclaves" in subject:
        detail += "; it looks like a nitrodeck emulator test root, trusted only on request (--trust-emulator)"
    return Check("root", False, detail), None


def _validity_check(windows: Sequence[_Window], at: dt.datetime) -> Check:
    bad = [w for w in windows if not w.not_before <= at <= w.not_after]
    if not bad:
        ends = min(w.not_after for w in windows)
        return Check("validity", True, f"every certificate valid at {at.isoformat()} (chain expires {ends.isoformat()})")
    parts = []
    for w in bad:
        state = "expired" if at > w.not_after else "not yet valid"
        parts.append(f"{w.label} {state} (valid {w.not_before.isoformat()} .. {w.not_after.isoformat()})")
    return Check("validity", False, f"at {at.isoformat()}: " + "; ".join(parts))


def _pcr_checks(doc: AttestationDoc, expected: Mapping[int, str]) -> list[Check]:
    if not expected:
        zero = all(doc.pcrs.get(i, b"\x01") == bytes(len(doc.pcrs.get(i, b""))) for i in (0, 1, 2))
        note = " (the document is from a debug-mode enclave: PCR0/1/2 are all zero)" if zero else ""
        return [Check("pcrs", None, "no expected PCRs given" + note)]
    out = []
    for index in sorted(expected):
        name = f"pcr{index}"
        want = expected[index].lower()
        have = doc.pcrs.get(index)
        if have is None:
            out.append(Check(name, False, "not in the document"))
        elif hmac.compare_digest(have.hex(), want):
            out.append(Check(name, True, f"matches {want[:16]}…"))
        elif index in DEBUG_ZERO_PCRS and have == bytes(len(have)):
            out.append(Check(name, False, f"debug mode: all-zero PCRs (expected {want[:16]}…)"))
        else:
            out.append(Check(name, False, "mismatch: " + _hex_difference(have.hex(), want)))
    return out


def _hex_difference(have: str, want: str) -> str:
    """Short prefixes when they already differ; else both values in full and where they part."""
    first = next((i for i, (a, b) in enumerate(zip(have, want, strict=False)) if a != b), min(len(have), len(want)))
    if first < 16:
        return f"document has {have[:16]}…, expected {want[:16]}…"
    return f"document has {have}, expected {want} (first difference at hex digit {first})"


def _field_check(name: str, have: bytes | None, want: bytes | None) -> Check:
    if want is None:
        return Check(name, None, "nothing expected" + ("" if have is None else f" (document carries {len(have)} bytes)"))
    if have is None:
        return Check(name, False, f"expected {len(want)} bytes, the document has none")
    if hmac.compare_digest(have, want):
        return Check(name, True, f"matches ({len(want)} bytes)")
    return Check(name, False, f"differs from the expected value ({len(have)} vs {len(want)} bytes)")


def _age_check(doc: AttestationDoc, at: dt.datetime, max_age: float | None) -> Check:
    issued = dt.datetime.fromtimestamp(doc.timestamp / 1000, dt.UTC)
    age = (at - issued).total_seconds()
    if at + FUTURE_SKEW < issued:
        return Check("age", False, f"timestamp {issued.isoformat()} is {-age:.0f}s after the verification time")
    if max_age is None:
        return Check("age", None, f"issued {issued.isoformat()} ({age:.0f}s before); no maximum age given")
    if age > max_age:
        return Check("age", False, f"{age:.0f}s old, more than the allowed {max_age:g}s")
    return Check("age", True, f"{max(age, 0):.0f}s old (allowed {max_age:g}s)")


def _as_roots(roots: Sequence[TrustRoot | x509.Certificate] | None, trust_emulator: bool) -> list[TrustRoot]:
    out = trust.default_roots() if roots is None else [
        r if isinstance(r, TrustRoot) else TrustRoot.from_cert("operator root", r) for r in roots
    ]
    if trust_emulator:
        emulator = trust.emulator_root()
        if emulator is not None:
            out.append(emulator)
    return out


def _utc(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return dt.datetime.now(dt.UTC)
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


def verify(
    document: bytes,
    *,
    at: dt.datetime | None = None,
    roots: Sequence[TrustRoot | x509.Certificate] | None = None,
    trust_emulator: bool = False,
    policy: Policy | None = None,
) -> VerificationReport:
    """Verify ``document`` at ``at`` (default now). ``roots`` replaces the default (AWS) root set;
    ``trust_emulator`` adds this home's emulator test root. Never raises on a bad document."""
    when = _utc(at)
    policy = policy or Policy()
    try:
        doc = parse_document(document)
    except AttestationError as exc:
        return VerificationReport(False, [Check("structure", False, str(exc))], None)
    checks = [Check("structure", True, f"COSE_Sign1 {'tagged' if doc.sign1.tagged else 'untagged'}, "
                                       f"{len(doc.pcrs)} PCRs, cabundle of {len(doc.cabundle)}")]
    checks.append(_signature_check(doc))
    root_check, root = _pick_root(doc, _as_roots(roots, trust_emulator))
    checks.append(root_check)
    if root is None:
        checks.append(Check("chain", False, "not checked: no trusted root"))
        checks.append(Check("validity", False, "not checked: no trusted root"))
    else:
        try:
            windows = _cached_chain(doc, root)
        except _ChainFailure as exc:
            checks.append(Check("chain", False, str(exc)))
            checks.append(Check("validity", False, "not checked: the chain is broken"))
        else:
            checks.append(Check("chain", True, f"{len(windows)} certificates, constraints and key usages hold"))
            checks.append(_validity_check(windows, when))
    checks.extend(_pcr_checks(doc, policy.pcrs))
    checks.append(_field_check("nonce", doc.nonce, policy.nonce))
    checks.append(_field_check("user_data", doc.user_data, policy.user_data))
    checks.append(_field_check("public_key", doc.public_key, policy.public_key))
    checks.append(_age_check(doc, when, policy.max_age))
    return VerificationReport(all_passed(checks), checks, doc)


# --- expected PCRs from files ---------------------------------------------------------------------


def pcrs_from_json(data: Any, where: str = "expected PCRs") -> dict[int, str]:
    """``{"PCR0": hex, ...}`` or nitro-cli build/describe-eif output (with ``Measurements``)."""
    if isinstance(data, Mapping) and isinstance(data.get("Measurements"), Mapping):
        data = data["Measurements"]
    if not isinstance(data, Mapping):
        raise AttestationError("expected a JSON object of PCRs", where=where)
    out: dict[int, str] = {}
    sizes = {2 * n for n in PCR_SIZES.values()}
    for key, value in data.items():
        if key == "HashAlgorithm":
            continue
        text = str(key).upper().removeprefix("PCR")
        if not (text.isascii() and text.isdigit()) or not 0 <= int(text) < 32:
            raise AttestationError(f"unknown key {str(key)[:20]!r}; expected PCR0..PCR31", where=where)
        if not isinstance(value, str) or len(value) not in sizes:
            raise AttestationError(f"{key} should be a hex string of {sorted(sizes)} digits", where=where)
        try:
            bytes.fromhex(value)
        except ValueError as exc:
            raise AttestationError(f"{key} is not hex", where=where) from exc
        out[int(text)] = value.lower()
    if not out:
        raise AttestationError("no PCRs in the file", where=where)
    return out
