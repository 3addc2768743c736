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
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import SignatureAlgorithmOID

from core.attest import trust
from core.attest.document import PCR_SIZES, AttestationDoc, AttestationError, Rule, parse_document
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
#: what cryptography raises on a certificate it cannot read (bad DER, version, names, algorithms)
_CERT_ERRORS = (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension,
                x509.UnsupportedGeneralNameType, UnsupportedAlgorithm)
#: the chain and signature rules (format rules: core.attest.document.RULES). Sources: NSM API
#: attestation_process.md §3.2.3 (= AWS "Verifying the root of trust"); P-384/ES384 for every
#: certificate is what every real chain carries (the leaf's ES384 signs the document).
_VERIFY = "NSM API attestation_process.md §3.2.3"
CHAIN_RULES: dict[str, Rule] = {
    "signature-es384": Rule("signature", "ES384 (96-byte r‖s) over the original payload by the leaf's P-384 key",
                            "§3.1 {1: -35}; §3.2.1 \"ensuring that the signature is correct\""),
    "root-pinned": Rule("cabundle[0]", "is a trusted root (DER SHA-256 fingerprint)",
                        "AWS \"Verifying the root of trust\"; §2.1 root certificate and its SHA-256"),
    "chain-der": Rule("certificate, cabundle[N]", "DER X.509 that cryptography can read", _VERIFY + " (X.509, RFC 5280)"),
    "chain-x509-v3": Rule("certificate, cabundle[N]", "X.509 version 3 (extensions)", _VERIFY + " (RFC 5280 §4.1.2.1)"),
    "chain-signed-by": Rule("certificate, cabundle[N]", "each signed by the next: leaf, cabundle[N-1..1], pinned root",
                            "§3.2.3 chain order [TARGET_CERT, INTERM_N, …, INTERM_1, ROOT_CERT]"),
    "chain-sig-es384": Rule("certificate, cabundle[N]", "signature algorithm ecdsa-with-SHA384",
                            "every real chain (reference §1.3); the COSE algorithm is ES384"),
    "chain-key-p384": Rule("certificate, cabundle[N], root", "ECDSA P-384 public key", "every real chain (reference §1.3)"),
    "chain-leaf-not-ca": Rule("certificate", "not a CA, no pathLenConstraint",
                              _VERIFY + ".3 \"pathLenConstraint must be undefined\" for the target"),
    "chain-leaf-key-usage": Rule("certificate", "keyUsage has digitalSignature", _VERIFY + ".3 target certificate"),
    "chain-ca": Rule("cabundle[N], root", "basicConstraints present, critical, CA true", _VERIFY + ".2 \"must appear as a "
                     "critical extension in all CA certificates\""),
    "chain-path-length": Rule("cabundle[N], root", "no chain longer than a CA's pathLenConstraint", _VERIFY + ".3"),
    "chain-ca-key-usage": Rule("cabundle[N], root", "keyUsage has keyCertSign", _VERIFY + ".3"),
    "validity": Rule("every certificate", "valid at the verification time, the root's too", _VERIFY + ".1"),
}
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
    #: False: a debug-mode document (all-zero PCR0/1/2) fails the "debug" check. verify-attestation
    #: sets it from --allow-debug; test-sign judges debug mode itself (its "debug mode" check)
    allow_debug: bool = True


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
    def __init__(self, rule: str, message: str, field: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.field = field


_chain_cache: OrderedDict[bytes, tuple[_Window, ...]] = OrderedDict()
_cache_lock = threading.Lock()


def clear_chain_cache() -> None:
    with _cache_lock:
        _chain_cache.clear()


def _load(der: bytes, label: str) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
        version = cert.version  # parsed lazily: an invalid version raises here
    except _CERT_ERRORS as exc:
        raise _ChainFailure("chain-der", f"{label} is not a readable DER X.509 certificate ({exc})", label) from exc
    if version != x509.Version.v3:
        raise _ChainFailure("chain-x509-v3", f"{label} is X.509 {version.name}, expected v3", label)
    return cert


def _ext(cert: x509.Certificate, cls: type[Any], label: str) -> Any:
    """The extension's value, or None when absent; (value, critical) via _ext_entry."""
    entry = _ext_entry(cert, cls, label)
    return None if entry is None else entry.value


def _ext_entry(cert: x509.Certificate, cls: type[Any], label: str) -> x509.Extension[Any] | None:
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None
    except _CERT_ERRORS as exc:  # a malformed or duplicated extension
        raise _ChainFailure("chain-der", f"{label} has an unreadable extension: {exc}", label) from exc


def _key_check(cert: x509.Certificate, label: str) -> None:
    try:
        key = cert.public_key()
    except _CERT_ERRORS as exc:
        raise _ChainFailure("chain-key-p384", f"{label} has an unreadable public key: {exc}", label) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        kind = f"EC {key.curve.name}" if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__
        raise _ChainFailure("chain-key-p384", f"{label} has a {kind} key, expected ECDSA P-384", label)


def _algorithm_check(cert: x509.Certificate, label: str) -> None:
    alg = cert.signature_algorithm_oid
    if alg != SignatureAlgorithmOID.ECDSA_WITH_SHA384:
        name = getattr(alg, "_name", None) or alg.dotted_string
        raise _ChainFailure("chain-sig-es384", f"{label} is signed with {name}, expected ecdsa-with-SHA384", label)


def _check_chain(doc: AttestationDoc, root: TrustRoot) -> tuple[_Window, ...]:
    """Walk leaf -> cabundle[N-1] .. cabundle[1] -> pinned root. Returns the validity windows."""
    labels = ["certificate"] + [f"cabundle[{i}]" for i in range(len(doc.cabundle) - 1, 0, -1)]
    ders = [doc.certificate] + [doc.cabundle[i] for i in range(len(doc.cabundle) - 1, 0, -1)]
    certs = [_load(d, label) for d, label in zip(ders, labels, strict=True)] + [root.cert]
    labels.append(f"root {root.name}")
    # keys first: a CA with another key type also makes its child's algorithm wrong, and the key is the cause
    for cert, label in zip(certs, labels, strict=True):
        _key_check(cert, label)
    for cert, label in zip(certs[:-1], labels[:-1], strict=True):  # the pinned root's self-signature is not used
        _algorithm_check(cert, label)
    for index in range(len(certs) - 1):
        child, issuer = certs[index], certs[index + 1]
        try:
            child.verify_directly_issued_by(issuer)
        except (*_CERT_ERRORS, InvalidSignature) as exc:
            reason = str(exc) or type(exc).__name__
            raise _ChainFailure("chain-signed-by", f"{labels[index]} is not signed by {labels[index + 1]}: {reason}",
                                labels[index]) from exc
    leaf = certs[0]
    leaf_bc = _ext(leaf, x509.BasicConstraints, labels[0])
    if leaf_bc is not None and (leaf_bc.ca or leaf_bc.path_length is not None):
        raise _ChainFailure("chain-leaf-not-ca", "certificate (leaf) is a CA or carries a pathLenConstraint", labels[0])
    leaf_ku = _ext(leaf, x509.KeyUsage, labels[0])
    if leaf_ku is None or not leaf_ku.digital_signature:
        raise _ChainFailure("chain-leaf-key-usage", "certificate (leaf) lacks keyUsage digitalSignature", labels[0])
    for index in range(1, len(certs)):
        cert, label = certs[index], labels[index]
        entry = _ext_entry(cert, x509.BasicConstraints, label)
        if entry is None or not entry.value.ca:
            raise _ChainFailure("chain-ca", f"{label} is not a CA (basicConstraints)", label)
        if not entry.critical:
            raise _ChainFailure("chain-ca", f"{label}'s basicConstraints is not critical", label)
        bc = entry.value
        below = index - 1  # CA certificates between this one and the leaf
        if bc.path_length is not None and below > bc.path_length:
            raise _ChainFailure("chain-path-length",
                                f"{label} allows {bc.path_length} CA(s) below it, the chain has {below}", label)
        ku = _ext(cert, x509.KeyUsage, label)
        if ku is None or not ku.key_cert_sign:
            raise _ChainFailure("chain-ca-key-usage", f"{label} lacks keyUsage keyCertSign", label)
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


def _broken(name: str, detail: str, rule: str, field: str) -> Check:
    """A failed check that enforces a rule of docs/attestation.md: it names the rule in its detail too, as
    the format rules do, so the text output says which rule refused the document, not only the JSON."""
    return Check(name, False, f"{detail} (rule {rule})", rule=rule, field=field)


def _signature_check(doc: AttestationDoc) -> Check:
    def failed(detail: str) -> Check:
        return _broken("signature", detail, "signature-es384", "signature")

    try:
        alg = doc.sign1.algorithm
    except CoseError as exc:
        return failed(f"protected header: {exc.message}")
    if alg != ES384:  # the parser already refuses this (rule cose-protected); kept for Sign1s built by hand
        return failed(f"protected header names algorithm {alg}, expected -35 (ES384)")
    if len(doc.sign1.signature) != 96:
        return failed(f"signature is {len(doc.sign1.signature)} bytes; ES384 is 96 (r||s)")
    try:
        key = x509.load_der_x509_certificate(doc.certificate).public_key()
    except _CERT_ERRORS as exc:  # e.g. a curve OID cryptography does not know, an invalid version
        return failed(f"leaf certificate unreadable: {exc}")
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        return failed("leaf key is not ECDSA P-384")
    if not doc.sign1.verify(key):
        return failed("ES384 signature does not verify with the leaf certificate's key")
    return Check("signature", True, "ES384 over the payload, by the leaf certificate's key")


def _pick_root(doc: AttestationDoc, roots: Sequence[TrustRoot]) -> tuple[Check, TrustRoot | None]:
    fingerprint = hashlib.sha256(doc.cabundle[0]).hexdigest().upper()
    for root in roots:
        if hmac.compare_digest(root.fingerprint, fingerprint):
            return Check("root", True, f"cabundle[0] is the pinned root {root.name} (sha256 {fingerprint[:16]}…)"), root
    try:
        with warnings.catch_warnings():  # cryptography warns about odd attribute lengths; the detail says enough
            warnings.simplefilter("ignore")
            subject = x509.load_der_x509_certificate(doc.cabundle[0]).subject.rfc4514_string()
    except _CERT_ERRORS:
        subject = "unreadable certificate"
    subject = subject if len(subject) <= 200 else subject[:197] + "..."
    trusted = ", ".join(r.name for r in roots) or "none"
    detail = f"cabundle[0] ({subject}, sha256 {fingerprint[:16]}…) is not a trusted root (trusted: {trusted})"
    if "CN=emulator.nitro-enclaves" in subject:
        detail += "; it looks like a nitrodeck emulator test root, trusted only on request (--trust emulator)"
    return _broken("root", detail, "root-pinned", "cabundle[0]"), None


def _validity_check(windows: Sequence[_Window], at: dt.datetime) -> Check:
    bad = [w for w in windows if not w.not_before <= at <= w.not_after]
    if not bad:
        ends = min(w.not_after for w in windows)
        return Check("validity", True, f"every certificate valid at {at.isoformat()} (chain expires {ends.isoformat()})")
    parts = []
    for w in bad:
        state = "expired" if at > w.not_after else "not yet valid"
        parts.append(f"{w.label} {state} (valid {w.not_before.isoformat()} .. {w.not_after.isoformat()})")
    return _broken("validity", f"at {at.isoformat()}: " + "; ".join(parts), "validity", bad[0].label)


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


def _debug_document_check(doc: AttestationDoc) -> Check:
    zero = all(doc.pcrs.get(i, b"\x01") == bytes(len(doc.pcrs.get(i, b""))) for i in (0, 1, 2))
    if zero:
        return Check("debug", False, "debug-mode document: PCR0/1/2 are all zero, so nothing proves which image "
                                     "runs (--allow-debug accepts it)")
    return Check("debug", True, "not a debug-mode document")


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
    issued = doc.issued()
    # differences of in-range datetimes always fit a timedelta; at + FUTURE_SKEW could overflow
    age = (at - issued).total_seconds()
    if issued - at > FUTURE_SKEW:
        return Check("age", False, f"timestamp {issued.isoformat()} is {-age:.0f}s after the verification time")
    if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int | float)
                                or not math.isfinite(max_age) or max_age < 0):
        # nan compares false with everything, so it would accept any age: refuse it here as well as in the CLI
        return Check("age", False, f"maximum age {max_age!r} is not a finite number of seconds >= 0")
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
        detail = f"{exc.where}: {exc.message}" + (f" (rule {exc.rule})" if exc.rule else "")
        return VerificationReport(False, [Check("structure", False, detail, rule=exc.rule, field=exc.where)], None)
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
            checks.append(_broken("chain", str(exc), exc.rule, exc.field))
            checks.append(Check("validity", False, "not checked: the chain is broken"))
        else:
            checks.append(Check("chain", True, f"{len(windows)} certificates, constraints and key usages hold"))
            checks.append(_validity_check(windows, when))
    if not policy.allow_debug:
        checks.append(_debug_document_check(doc))
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
