"""Test-sign and attest, parent side: ask a running enclave to prove itself, then check every claim.

The flow (Nautilus-style): send a payload and a fresh nonce; the enclave returns a signature, its
public key and an attestation document whose user_data binds key, payload and nonce together:
``user_data = sha256(public_key_DER || sha256(payload) || nonce)``, the nonce is the document's
nonce and the key is its public_key. Nothing the enclave says is taken on trust here: the
signature is verified with ``cryptography`` directly, the document with core.attest.verify against
the pinned root (the emulator's test root only when the backend is the emulator), and the PCRs
against what the operator expects, by default the enclave's own measurements from
describe-enclaves (i.e. the EIF it was launched from).

Neither call changes enclave state, so both are allowed in read-only mode.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.attest.trust import TrustChoice, choose_roots
from core.attest.verify import Policy, VerificationReport, verify
from core.channel.bridge import parse_host_port
from core.channel.protocol import ProtocolClient, ProtocolError, RemoteError, sign_binding
from core.checks import Check, all_passed
from core.errors import InputTooLarge, NitrodeckError, UsageError
from core.models import EnclaveInfo

PAYLOAD_PORT = 5005
MAX_PAYLOAD = 64 * 1024
NONCE_SIZE = 32
MAX_NONCE = 512
DEFAULT_TIMEOUT = 30.0
#: a document older than this (against our clock) is not a fresh answer to our nonce
MAX_AGE_S = 300.0
SCHEMES = ("secp256k1", "ed25519")
DEBUG_ZERO_PCRS = (0, 1, 2)


class TestSignError(NitrodeckError):
    """The enclave could not be asked (unreachable, died mid-request, answered nonsense)."""

    __test__ = False  # not a pytest class, despite the name
    code = "ND-TEST-SIGN"


def _report_dict(report: Any) -> dict[str, Any]:
    out = {k: v for k, v in report.__dict__.items() if k != "checks"}
    out["pcrs"] = {str(k): v for k, v in report.pcrs.items()}
    out["checks"] = [c.to_dict() for c in report.checks]
    return out


@dataclass
class AttestReport:
    ok: bool
    enclave_id: str
    cid: int
    nonce: str  # hex
    attestation: str  # base64 of the COSE_Sign1 document
    checks: list[Check]
    pcrs: dict[int, str] = field(default_factory=dict)  # what the document attests (hex)
    module_id: str | None = None
    debug_mode: bool = False
    via: str = ""
    trusted_roots: list[str] = field(default_factory=list)  # "name (why)" per root, then notes

    def to_dict(self) -> dict[str, Any]:
        return _report_dict(self)


@dataclass
class SignReport:
    ok: bool
    scheme: str
    enclave_id: str
    cid: int
    signature: str  # hex (DER ECDSA for secp256k1, raw 64 bytes for Ed25519)
    public_key: str  # hex of the DER SubjectPublicKeyInfo
    payload_sha256: str
    nonce: str  # hex
    attestation: str  # base64
    checks: list[Check]
    pcrs: dict[int, str] = field(default_factory=dict)
    debug_mode: bool = False
    via: str = ""
    trusted_roots: list[str] = field(default_factory=list)  # "name (why)" per root, then notes

    def to_dict(self) -> dict[str, Any]:
        return _report_dict(self)


def verify_signature(scheme: str, public_key_der: bytes, signature: bytes, payload: bytes) -> Check:
    """ECDSA-SHA256 (DER) on secp256k1, or Ed25519, checked with cryptography directly."""
    try:
        key = serialization.load_der_public_key(public_key_der)
    except (ValueError, TypeError) as exc:
        return Check("payload signature", False, f"public key is not DER SubjectPublicKeyInfo ({exc})")
    try:
        if scheme == "secp256k1":
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256K1):
                return Check("payload signature", False, "the returned key is not a secp256k1 key")
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        elif scheme == "ed25519":
            if not isinstance(key, Ed25519PublicKey):
                return Check("payload signature", False, "the returned key is not an Ed25519 key")
            key.verify(signature, payload)
        else:
            return Check("payload signature", False, f"unknown scheme {scheme!r}")
    except InvalidSignature:
        return Check("payload signature", False, f"{scheme} signature does not verify over the payload")
    return Check("payload signature", True, f"{scheme} signature verifies with the returned key")


def _expected(info: EnclaveInfo, expected_pcrs: Mapping[int, str] | None) -> tuple[dict[int, str], str]:
    if expected_pcrs is not None:
        return {int(k): v.lower() for k, v in expected_pcrs.items()}, "operator"
    if info.measurements is not None:
        return dict(info.measurements.pcrs()), "describe-enclaves"
    return {}, "none"


def _debug_check(info: EnclaveInfo, expected: Mapping[int, str], source: str) -> Check:
    if not info.debug_mode:
        return Check("debug mode", True, "production enclave: PCRs are the image's measurements")
    zeros = [i for i in DEBUG_ZERO_PCRS if i in expected and set(expected[i]) == {"0"}]
    if source == "operator" and zeros:
        return Check("debug mode", True, "debug enclave; the operator expects its all-zero PCRs")
    return Check(
        "debug mode",
        False,
        "enclave runs in debug mode: it attests all-zero PCR0/1/2, so nothing proves which image runs",
    )


def _trust(lifecycle: Any) -> TrustChoice:
    """AWS's root; the emulator's too when the enclave is emulated (its documents are signed under it)."""
    return choose_roots(emulated_enclave=lifecycle.backend.is_emulator)


def _attestation_checks(report: VerificationReport) -> list[Check]:
    out = []
    for check in report.checks:
        name = "document signature" if check.name == "signature" else check.name
        out.append(replace(check, name=name))  # keeps the rule id and field of a failed rule
    return out


def _bytes_field(result: Any, name: str) -> bytes:
    value = result.get(name) if isinstance(result, Mapping) else None
    if not isinstance(value, bytes | bytearray):
        raise TestSignError(f"the enclave's answer has no byte string {name!r}", where="test-sign")
    return bytes(value)


#: how long a just-launched enclave may take to start listening
STARTUP_GRACE = 5.0


def _label(via: str | None, cid: int, port: int) -> str:
    return f"tcp {via}" if via else f"vsock {cid}:{port}"


async def _connect(
    lifecycle: Any, info: EnclaveInfo, via: str | None, port: int, timeout: float
) -> ProtocolClient:
    # A payload that has just booted may not listen yet (run-enclave returns at the boot heartbeat,
    # before the application binds its port): retry refused connections for a short grace period.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(timeout, STARTUP_GRACE)
    while True:
        try:
            if via:
                address = parse_host_port(via, where="--via")
                return await ProtocolClient.connect_tcp(address.host, address.port, timeout=timeout)
            return await ProtocolClient.connect_vsock(lifecycle.backend.transport(), info.cid, port, timeout=timeout)
        except ProtocolError:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.1)


async def _ask(
    lifecycle: Any,
    info: EnclaveInfo,
    method: str,
    params: dict[str, Any],
    via: str | None,
    port: int,
    timeout: float,
) -> Any:
    where = f"enclave {info.label} ({_label(via, info.cid, port)})"
    try:
        client = await _connect(lifecycle, info, via, port, timeout)
    except ProtocolError as exc:
        raise TestSignError(
            exc.message, where=where, hint=exc.hint or "is the enclave running the nitrodeck payload?"
        ) from exc
    try:
        return await client.call(method, params, timeout=timeout)
    except RemoteError:
        raise
    except ProtocolError as exc:
        raise TestSignError(
            f"{method} failed: {exc.message}",
            where=where,
            hint=f"the payload may have stopped; see `nitrodeck console {info.label}`",
        ) from exc
    finally:
        await client.close()


def _nonce(nonce: bytes | None) -> bytes:
    value = os.urandom(NONCE_SIZE) if nonce is None else nonce
    if not value or len(value) > MAX_NONCE:
        raise UsageError(f"the nonce must be 1..{MAX_NONCE} bytes", where="--nonce")
    return value


async def test_sign_async(
    lifecycle: Any,
    enclave: str,
    payload: bytes,
    scheme: str = "secp256k1",
    expected_pcrs: Mapping[int, str] | None = None,
    via: str | None = None,
    nonce: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    port: int = PAYLOAD_PORT,
) -> SignReport:
    if scheme not in SCHEMES:
        raise UsageError(
            f"unknown scheme {scheme[:32]!r}", where="--scheme", hint=f"use one of {', '.join(SCHEMES)}"
        )
    if len(payload) > MAX_PAYLOAD:
        raise InputTooLarge(
            f"the payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD}", where="--payload"
        )
    info = await asyncio.to_thread(lifecycle.find, enclave)
    nonce = _nonce(nonce)
    result = await _ask(
        lifecycle, info, "sign", {"payload": payload, "scheme": scheme, "nonce": nonce}, via, port, timeout
    )
    return sign_report(
        info,
        scheme,
        payload,
        nonce,
        _bytes_field(result, "signature"),
        _bytes_field(result, "public_key"),
        _bytes_field(result, "attestation"),
        expected_pcrs,
        via_label=_label(via, info.cid, port),
        trust=_trust(lifecycle),
    )


def sign_report(
    info: EnclaveInfo,
    scheme: str,
    payload: bytes,
    nonce: bytes,
    signature: bytes,
    public_key: bytes,
    document: bytes,
    expected_pcrs: Mapping[int, str] | None,
    *,
    via_label: str,
    trust: TrustChoice,
    at: dt.datetime | None = None,
) -> SignReport:
    """Every check of a test-sign answer: the payload signature, the attestation document (core.attest.verify
    at ``at``, against ``trust``'s roots), the binding, the PCRs. The TUI's frozen world calls
    this too, on evidence an emulated enclave produced, so its screens show what core really reports."""
    expected, source = _expected(info, expected_pcrs)
    checks = [
        Check("enclave", True, f"{info.enclave_id} (CID {info.cid}) over {via_label}"),
        verify_signature(scheme, public_key, signature, payload),
    ]
    policy = Policy(
        pcrs=expected,
        nonce=nonce,
        user_data=sign_binding(public_key, payload, nonce),
        public_key=public_key,
        max_age=MAX_AGE_S,
    )
    report = verify(document, roots=trust.roots, at=at, policy=policy)
    checks += _attestation_checks(report)
    checks.append(_debug_check(info, expected, source))
    pcrs = {i: v.hex() for i, v in report.document.pcrs.items()} if report.document else {}
    return SignReport(
        ok=all_passed(checks),
        scheme=scheme,
        enclave_id=info.enclave_id,
        cid=info.cid,
        signature=signature.hex(),
        public_key=public_key.hex(),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        nonce=nonce.hex(),
        attestation=base64.b64encode(document).decode(),
        checks=checks,
        pcrs=pcrs,
        debug_mode=info.debug_mode,
        via=via_label,
        trusted_roots=trust.lines(),
    )


async def attest_async(
    lifecycle: Any,
    enclave: str,
    nonce: bytes | None = None,
    expected_pcrs: Mapping[int, str] | None = None,
    via: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    port: int = PAYLOAD_PORT,
) -> AttestReport:
    info = await asyncio.to_thread(lifecycle.find, enclave)
    nonce = _nonce(nonce)
    expected, source = _expected(info, expected_pcrs)
    result = await _ask(lifecycle, info, "attest", {"nonce": nonce}, via, port, timeout)
    document = _bytes_field(result, "document")
    choice = _trust(lifecycle)
    report = verify(document, roots=choice.roots, policy=Policy(pcrs=expected, nonce=nonce, max_age=MAX_AGE_S))
    checks = [
        Check("enclave", True, f"{info.enclave_id} (CID {info.cid}) over {_label(via, info.cid, port)}")
    ]
    checks += _attestation_checks(report)
    checks.append(_debug_check(info, expected, source))
    doc = report.document
    return AttestReport(
        ok=all_passed(checks),
        enclave_id=info.enclave_id,
        cid=info.cid,
        nonce=nonce.hex(),
        attestation=base64.b64encode(document).decode(),
        checks=checks,
        pcrs={i: v.hex() for i, v in doc.pcrs.items()} if doc else {},
        module_id=doc.module_id if doc else None,
        debug_mode=info.debug_mode,
        via=_label(via, info.cid, port),
        trusted_roots=choice.lines(),
    )


def test_sign(
    lifecycle: Any,
    enclave: str,
    payload: bytes,
    scheme: str = "secp256k1",
    expected_pcrs: Mapping[int, str] | None = None,
    via: str | None = None,
    nonce: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    port: int = PAYLOAD_PORT,
) -> SignReport:
    """Blocking test-sign (CLI, TUI thread workers). ``enclave`` is an ID or a name."""
    return asyncio.run(
        test_sign_async(lifecycle, enclave, payload, scheme, expected_pcrs, via, nonce, timeout, port)
    )


test_sign.__test__ = False  # type: ignore[attr-defined]  # pytest: a library function, not a test
test_sign_async.__test__ = False  # type: ignore[attr-defined]


def attest(
    lifecycle: Any,
    enclave: str,
    nonce: bytes | None = None,
    expected_pcrs: Mapping[int, str] | None = None,
    via: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    port: int = PAYLOAD_PORT,
) -> AttestReport:
    """Blocking attestation round trip with the same checks (no signature)."""
    return asyncio.run(attest_async(lifecycle, enclave, nonce, expected_pcrs, via, timeout, port))
