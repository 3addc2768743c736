"""The local KMS: a moto server for keys and ciphertexts, and in front of it the Recipient layer.

moto ignores ``Recipient`` and does not enforce key policies (shared/reference §7), so the layer does
what AWS KMS does for a Nitro enclave:

1. verify the attestation document (core.attest.verify, trusting the emulator's root);
2. evaluate the key policy's ``kms:RecipientAttestation:ImageSha384`` / ``:PCR<n>`` conditions for
   the action (policy fetched from moto with GetKeyPolicy);
3. answer with ``CiphertextForRecipient`` (CMS to the document's RSA public key) and no plaintext.

Requests without ``Recipient`` pass through to moto byte for byte. Both servers listen on
127.0.0.1 only. The layer logs actions, key IDs and verdicts, never plaintexts or credentials.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from core import home
from core.crypto import cms
from core.errors import NitrodeckError

log = logging.getLogger("nitrodeck.kms")

MAX_BODY = 1024 * 1024
MAX_POLICY = 32 * 1024
RECIPIENT_ACTIONS = ("Decrypt", "GenerateDataKey", "GenerateRandom")
KEY_ALGORITHM = "RSAES_OAEP_SHA_256"
CONDITION_PREFIX = "kms:recipientattestation:"
_REGION = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]{1,32})/kms/")
ZERO_PCR = "0" * 96


class KmsLayerError(NitrodeckError):
    """A KMS-style refusal: ``kms_type`` is the wire ``__type`` (AccessDeniedException, ...)."""

    code = "ND-KMS"

    def __init__(self, kms_type: str, message: str, status: int = 400) -> None:
        super().__init__(message, where=f"kms {kms_type}")
        self.kms_type = kms_type
        self.status = status


@dataclass(frozen=True)
class Attested:
    """What the layer takes from a verified attestation document."""

    pcrs: dict[int, str]
    public_key: rsa.RSAPublicKey


Verifier = Callable[[bytes], Attested]


def verify_document(doc: bytes) -> Attested:
    """Verify with core.attest.verify (emulator root trusted) and pull out PCRs and the RSA key."""
    try:
        from core.attest import verify as attestation
    except ImportError as exc:  # fail closed: without a verifier nothing is released
        raise KmsLayerError("KMSInternalException", "attestation verification is not available") from exc
    try:
        report = attestation.verify(doc, trust_emulator=True)
    except NitrodeckError as exc:
        raise KmsLayerError(
            "ValidationException", f"the attestation document is not valid: {exc.message}"
        ) from exc
    if not report.ok:
        failed = [f"{c.name} ({c.detail})" if c.detail else c.name for c in report.checks if c.ok is False]
        raise KmsLayerError(
            "ValidationException",
            f"the attestation document failed verification: {'; '.join(failed) or 'unknown'}",
        )
    document = report.document
    raw_key = getattr(document, "public_key", None)
    if not raw_key:
        raise KmsLayerError("ValidationException", "the attestation document carries no public_key")
    try:
        key = load_der_public_key(bytes(raw_key))
    except ValueError as exc:
        raise KmsLayerError(
            "ValidationException", "the attestation public_key is not SubjectPublicKeyInfo DER"
        ) from exc
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != 2048:
        raise KmsLayerError("ValidationException", "the attestation public_key must be an RSA-2048 key")
    pcrs = {int(i): _hex(v) for i, v in dict(getattr(document, "pcrs", {}) or {}).items()}
    return Attested(pcrs=pcrs, public_key=key)


def _hex(value: Any) -> str:
    return bytes(value).hex() if isinstance(value, bytes | bytearray | memoryview) else str(value).lower()


# --- key policy evaluation --------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [value]


def _action_matches(statement: Mapping[str, Any], action: str) -> bool:
    wanted = f"kms:{action}".lower()
    for pattern in _as_list(statement.get("Action", [])):
        if not isinstance(pattern, str):
            continue
        p = pattern.lower()
        if p in ("*", "kms:*", wanted) or (p.endswith("*") and wanted.startswith(p[:-1])):
            return True
    return False


def recipient_context(pcrs: Mapping[int, str]) -> dict[str, str]:
    """The condition keys KMS derives from an attestation document (lower-cased names)."""
    ctx = {f"{CONDITION_PREFIX}pcr{i}": v.lower() for i, v in pcrs.items()}
    if 0 in pcrs:
        ctx[f"{CONDITION_PREFIX}imagesha384"] = pcrs[0].lower()
    return ctx


def _conditions_hold(conditions: Any, context: Mapping[str, str]) -> bool | None:
    """True/False for the statement's recipient conditions; None if it uses an operator we cannot judge."""
    if not isinstance(conditions, Mapping):
        return True
    for operator, pairs in conditions.items():
        if not isinstance(pairs, Mapping):
            return None
        for key, expected in pairs.items():
            key_l = str(key).lower()
            if not key_l.startswith(CONDITION_PREFIX):
                continue  # not ours to judge (caller account, via service ...): the emulator ignores them
            actual = context.get(key_l)
            values = [str(v) for v in _as_list(expected)]
            op = str(operator)
            if op == "StringEquals":
                ok = actual is not None and actual in values
            elif op == "StringEqualsIgnoreCase":
                ok = actual is not None and actual.lower() in [v.lower() for v in values]
            elif op == "StringNotEquals":
                ok = actual is None or actual not in values
            elif op == "StringNotEqualsIgnoreCase":
                ok = actual is None or actual.lower() not in [v.lower() for v in values]
            else:
                return None
            if not ok:
                return False
    return True


def evaluate_policy(policy: Mapping[str, Any], action: str, pcrs: Mapping[int, str]) -> tuple[bool, str]:
    """(allowed, reason). An explicit Deny wins; otherwise one Allow whose conditions all hold."""
    context = recipient_context(pcrs)
    statements = [s for s in _as_list(policy.get("Statement", [])) if isinstance(s, Mapping)]
    allowed_by: str | None = None
    mismatches: list[str] = []
    for i, st in enumerate(statements):
        if not _action_matches(st, action):
            continue
        sid = str(st.get("Sid", f"statement {i}"))
        verdict = _conditions_hold(st.get("Condition"), context)
        effect = st.get("Effect")
        if effect == "Deny" and verdict is True:
            return False, f"denied by {sid!r}"
        if effect == "Allow":
            if verdict is True and allowed_by is None:
                allowed_by = sid
            elif verdict is False:
                mismatches.append(sid)
    if allowed_by is not None:
        return True, f"allowed by {allowed_by!r}"
    if mismatches:
        return False, f"the enclave's measurements do not match the key policy ({', '.join(mismatches)})"
    return False, f"no key policy statement allows kms:{action}"


# --- the HTTP layer ---------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _LayerServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        return  # request lines can carry nothing secret, but keep the console quiet

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            # drain a moderately oversized body so the client reads our answer, not a reset
            left = length if length <= 2 * MAX_BODY else 0
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
            self._reply_error(
                KmsLayerError("ValidationException", f"request body over {MAX_BODY} bytes", 413)
            )
            self.close_connection = True
            return
        body = self.rfile.read(length)
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")
        }
        target = self.headers.get("X-Amz-Target", "")
        action = target.rsplit(".", 1)[-1] if target.startswith("TrentService.") else ""
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            request = None
        if not isinstance(request, dict) or "Recipient" not in request:
            status, rheaders, rbody = self.server.layer.forward(body, headers)
            self._reply(status, rbody, rheaders.get("Content-Type", "application/x-amz-json-1.1"))
            return
        try:
            result = self.server.layer.with_recipient(action, request, headers)
        except KmsLayerError as err:
            self._reply_error(err)
            return
        self._reply(200, json.dumps(result).encode(), "application/x-amz-json-1.1")

    def _reply_error(self, err: KmsLayerError) -> None:
        body = json.dumps({"__type": err.kms_type, "message": err.message}).encode()
        self._reply(err.status, body, "application/x-amz-json-1.1")

    def _reply(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _LayerServer(ThreadingHTTPServer):
    daemon_threads = True
    layer: RecipientLayer


class RecipientLayer:
    """KMS's Recipient semantics in front of a moto endpoint."""

    def __init__(self, moto_url: str, verifier: Verifier = verify_document) -> None:
        self.moto_url = moto_url.rstrip("/")
        self.verifier = verifier
        self.decisions: list[tuple[str, bool, str]] = []  # (action, allowed, reason), for tests and ops

    def forward(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.moto_url + "/", data=body, headers=dict(headers), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers.items()), resp.read(MAX_BODY)
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read(MAX_BODY)
        except (urllib.error.URLError, OSError) as exc:
            down = {"__type": "KMSInternalException", "message": f"the local KMS store is down: {exc}"}
            return 500, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(down).encode()

    def _moto(self, action: str, request: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
        h = dict(headers)
        h["X-Amz-Target"] = f"TrentService.{action}"
        status, _rh, body = self.forward(json.dumps(request).encode(), h)
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = {}
        if status != 200 or not isinstance(data, dict):
            kms_type = (
                str(data.get("__type", "KMSInternalException"))
                if isinstance(data, dict)
                else "KMSInternalException"
            )
            message = (
                str(data.get("message") or data.get("Message") or f"moto answered {status}")
                if isinstance(data, dict)
                else ""
            )
            raise KmsLayerError(kms_type.rsplit("#", 1)[-1], message, status if status >= 400 else 500)
        return data

    def _policy(self, key_id: str, headers: Mapping[str, str]) -> dict[str, Any]:
        data = self._moto("GetKeyPolicy", {"KeyId": key_id, "PolicyName": "default"}, headers)
        text = data.get("Policy", "")
        if not isinstance(text, str) or len(text) > MAX_POLICY:
            raise KmsLayerError("KMSInternalException", "the key policy is missing or too large")
        try:
            policy = json.loads(text)
        except ValueError as exc:
            raise KmsLayerError("KMSInternalException", "the key policy is not JSON") from exc
        if not isinstance(policy, dict):
            raise KmsLayerError("KMSInternalException", "the key policy is not a JSON object")
        return policy

    def _authorize(self, action: str, key_id: str, attested: Attested, headers: Mapping[str, str]) -> None:
        allowed, reason = evaluate_policy(self._policy(key_id, headers), action, attested.pcrs)
        self.decisions.append((action, allowed, reason))
        log.info("kms %s key=%s recipient=%s: %s", action, key_id, "allowed" if allowed else "denied", reason)
        if allowed:
            return
        if attested.pcrs.get(0, ZERO_PCR) == ZERO_PCR:
            reason = "the enclave runs in debug mode (all-zero PCRs); a key policy pinned to PCRs never releases keys to it"
        raise KmsLayerError(
            "AccessDeniedException",
            f"User is not authorized to perform kms:{action} with this attestation document: {reason}",
        )

    def with_recipient(
        self, action: str, request: dict[str, Any], headers: Mapping[str, str]
    ) -> dict[str, Any]:
        if action not in RECIPIENT_ACTIONS:
            raise KmsLayerError(
                "UnsupportedOperationException",
                f"the local KMS does not support Recipient on {action or '?'}",
            )
        recipient = request.pop("Recipient")
        if not isinstance(recipient, dict):
            raise KmsLayerError("ValidationException", "Recipient must be an object")
        if recipient.get("KeyEncryptionAlgorithm") != KEY_ALGORITHM:
            raise KmsLayerError("ValidationException", f"KeyEncryptionAlgorithm must be {KEY_ALGORITHM}")
        doc_b64 = recipient.get("AttestationDocument")
        if not isinstance(doc_b64, str) or len(doc_b64) > 262144 * 4 // 3 + 4:
            raise KmsLayerError("ValidationException", "AttestationDocument is missing or over 262144 bytes")
        try:
            doc = base64.b64decode(doc_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KmsLayerError("ValidationException", "AttestationDocument is not base64") from exc
        attested = self.verifier(doc)
        if action == "Decrypt":
            # moto tells us which key the ciphertext belongs to; nothing leaves before the policy says yes
            out = self._moto("Decrypt", request, headers)
            key_id = str(out.get("KeyId", ""))
            self._authorize(action, key_id, attested, headers)
            plaintext = base64.b64decode(out.pop("Plaintext", ""))
            out["CiphertextForRecipient"] = base64.b64encode(
                cms.build_enveloped(plaintext, attested.public_key)
            ).decode()
            return out
        if action == "GenerateDataKey":
            wanted = request.get("KeyId")
            if not isinstance(wanted, str) or not wanted:
                raise KmsLayerError("ValidationException", "KeyId is required")
            described = self._moto("DescribeKey", {"KeyId": wanted}, headers)
            arn = str(described.get("KeyMetadata", {}).get("Arn", wanted))
            self._authorize(action, arn, attested, headers)
            out = self._moto("GenerateDataKey", request, headers)
            plaintext = base64.b64decode(out.pop("Plaintext", ""))
            out["CiphertextForRecipient"] = base64.b64encode(
                cms.build_enveloped(plaintext, attested.public_key)
            ).decode()
            return out
        # GenerateRandom: no key, so no key policy; a verified document is what KMS requires
        out = self._moto("GenerateRandom", request, headers)
        plaintext = base64.b64decode(out.pop("Plaintext", ""))
        self.decisions.append((action, True, "no key policy applies"))
        return {
            "CiphertextForRecipient": base64.b64encode(
                cms.build_enveloped(plaintext, attested.public_key)
            ).decode()
        }


class LocalKms:
    """moto + the Recipient layer, in-process. ``endpoint_url`` is what clients (and vsock-proxy) use."""

    def __init__(self, verifier: Verifier = verify_document) -> None:
        self._verifier = verifier
        self._moto: Any = None
        self._http: _LayerServer | None = None
        self._thread: threading.Thread | None = None
        self.moto_url = ""
        self.layer: RecipientLayer | None = None

    @property
    def port(self) -> int:
        assert self._http is not None
        return int(self._http.server_address[1])

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalKms:
        from moto.server import ThreadedMotoServer

        # werkzeug logs every request line of moto's server; the layer logs decisions instead
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        self.layer = RecipientLayer(self.moto_url, self._verifier)
        self._http = _LayerServer(("127.0.0.1", 0), _Handler)
        self._http.layer = self.layer
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

    def __enter__(self) -> LocalKms:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_endpoint_file(self, path: Path | None = None) -> dict[str, Any]:
        info = {
            "endpoint_url": self.endpoint_url,
            "port": self.port,
            "moto_url": self.moto_url,
            "pid": os.getpid(),
        }
        target = path or endpoint_file()
        home.ensure(target.parent)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(target)
        return info


def allow_in_proxy_config(port: int, path: Path | None = None) -> Path:
    """Add 127.0.0.1:``port`` to the emulator's vsock-proxy.yaml (created with the stock KMS entry
    if absent), as an operator would for a new endpoint; existing entries are left as they are."""
    from core.channel.proxy import load_allowlist

    target = path or home.emulator_etc() / "vsock-proxy.yaml"
    home.ensure(target.parent)
    if target.exists():
        if any(e.address == "127.0.0.1" and e.port == port for e in load_allowlist(target)):
            return target
        text = target.read_text()
    else:
        text = "allowlist:\n- {address: kms.us-east-1.amazonaws.com, port: 443}\n"
    text += ("" if text.endswith("\n") else "\n") + f"- {{address: 127.0.0.1, port: {port}}}\n"
    # whole-file replace: a proxy starting now reads the old list or the new one, never half
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(target)
    return target


def endpoint_file() -> Path:
    return home.emulator_dir() / "kms.json"


def read_endpoint_file(path: Path | None = None) -> str | None:
    """The running local KMS's endpoint URL, if `nitrodeck kms local-server` wrote one."""
    target = path or endpoint_file()
    try:
        raw = target.read_bytes()[:4096]
        data = json.loads(raw)
    except (OSError, ValueError):
        return None
    url = data.get("endpoint_url") if isinstance(data, dict) else None
    return url if isinstance(url, str) and url.startswith("http://127.0.0.1:") else None
