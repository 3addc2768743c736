"""The local KMS: a moto server for keys and ciphertexts, and in front of it the Recipient layer.

moto ignores ``Recipient`` and does not enforce key policies (shared/reference §7), so the layer does
what AWS KMS does, for every request and not only for an enclave's:

1. for a request with ``Recipient``: verify the attestation document (core.attest.verify, trusting the
   emulator's root), so its PCRs become the ``kms:RecipientAttestation:*`` condition keys;
2. evaluate the key's policy (emulator/kms_policy.py, policy fetched from moto with GetKeyPolicy)
   for the action, the caller, the key and the request's condition keys: an explicit Deny wins, a
   key missing from the request fails a condition as on AWS, and a policy it cannot evaluate denies;
3. answer a Recipient request with ``CiphertextForRecipient`` (CMS to the document's RSA key) and
   no plaintext; forward any other allowed request to moto.

A request for a key is judged before moto acts on it (its KeyId is resolved once, and moto is asked
about that ARN, so an alias re-pointed meanwhile changes nothing); Decrypt and ReEncrypt, whose key
is known only from the ciphertext, are judged on moto's answer before any of it leaves. Actions
that name no key (CreateKey, ListKeys, GenerateRandom ...) are IAM's business on AWS and pass; an
action the layer does not know is refused. Both servers listen on 127.0.0.1 only. The layer logs
actions, key IDs and verdicts, never plaintexts or credentials.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections import deque
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
from emulator import kms_policy

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

#: actions that name no key: on AWS only IAM policies govern them, and the emulator has no IAM
KEYLESS_ACTIONS = frozenset(
    {"CreateKey", "ListKeys", "ListAliases", "GenerateRandom", "ListRetirableGrants", "RetireGrant"}
)
#: actions moto implements whose key is the request's KeyId (judged before moto runs them)
KEY_ACTIONS = frozenset(
    {
        "ReplicateKey", "UpdateKeyDescription", "TagResource", "UntagResource", "ListResourceTags",
        "DescribeKey", "CreateGrant", "ListGrants", "RevokeGrant", "EnableKeyRotation",
        "DisableKeyRotation", "GetKeyRotationStatus", "PutKeyPolicy", "GetKeyPolicy",
        "ListKeyPolicies", "Encrypt", "DisableKey", "EnableKey", "CancelKeyDeletion",
        "ScheduleKeyDeletion", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "GenerateMac",
        "Sign", "Verify", "VerifyMac", "GetPublicKey", "RotateKeyOnDemand", "ListKeyRotations",
    }
)  # fmt: skip
_ENCRYPTION_ACTIONS = ("Encrypt", "Decrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext")


def recipient_context(pcrs: Mapping[int, str]) -> dict[str, str]:
    """The condition keys KMS derives from an attestation document (lower-case names)."""
    return {k: v[0] for k, v in kms_policy.recipient_keys(pcrs).items()}


def _context_map(value: Any, field_name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise KmsLayerError("ValidationException", f"{field_name} must map strings to strings")
    return value


def request_keys(
    action: str,
    request: Mapping[str, Any],
    *,
    caller: str,
    account: str,
    pcrs: Mapping[int, str] | None = None,
    key_metadata: Mapping[str, Any] | None = None,
    source_ip: str | None = None,
    encryption_context: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """The request context's condition keys (lower-case names; every value a list, as IAM sees it).
    Keys the emulator cannot know (kms:ViaService, aws:SourceVpce ...) stay absent, which fails any
    positive condition on them: an Allow that needs one does not apply."""
    now = time.time()
    keys: dict[str, list[str]] = {
        "aws:principalarn": [caller],
        "aws:principalaccount": [account],
        "aws:principaltype": ["Account" if caller.endswith(":root") else "AssumedRole"],
        "kms:calleraccount": [account],
        "aws:currenttime": [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))],
        "aws:epochtime": [str(int(now))],
    }
    if source_ip:
        keys["aws:sourceip"] = [source_ip]
    if pcrs:
        keys.update(kms_policy.recipient_keys(pcrs))
    if key_metadata:
        for name, field_name in (
            ("kms:keyspec", "KeySpec"),
            ("kms:keyusage", "KeyUsage"),
            ("kms:keyorigin", "Origin"),
        ):
            if isinstance(key_metadata.get(field_name), str):
                keys[name] = [key_metadata[field_name]]
        if isinstance(key_metadata.get("MultiRegion"), bool):
            keys["kms:multiregion"] = ["true" if key_metadata["MultiRegion"] else "false"]
    context = encryption_context
    if context is None and action in _ENCRYPTION_ACTIONS:
        context = _context_map(request.get("EncryptionContext"), "EncryptionContext")
    if context:
        for k, v in context.items():
            keys[f"kms:encryptioncontext:{k.lower()}"] = [v]
        keys["kms:encryptioncontextkeys"] = list(context)
    algorithm = request.get("EncryptionAlgorithm")
    if action in _ENCRYPTION_ACTIONS or action.startswith("ReEncrypt"):
        keys["kms:encryptionalgorithm"] = [algorithm if isinstance(algorithm, str) else "SYMMETRIC_DEFAULT"]
    if isinstance(request.get("SigningAlgorithm"), str):
        keys["kms:signingalgorithm"] = [request["SigningAlgorithm"]]
    if isinstance(request.get("MacAlgorithm"), str):
        keys["kms:macalgorithm"] = [request["MacAlgorithm"]]
    if action == "CreateGrant":
        ops = request.get("Operations")
        if isinstance(ops, list) and all(isinstance(o, str) for o in ops):
            keys["kms:grantoperations"] = list(ops)
        for name, field_name in (
            ("kms:granteeprincipal", "GranteePrincipal"),
            ("kms:retiringprincipal", "RetiringPrincipal"),
        ):
            if isinstance(request.get(field_name), str):
                keys[name] = [request[field_name]]
    if action == "GenerateDataKey" and isinstance(request.get("KeySpec"), str):
        keys["kms:datakeypairspec"] = [request["KeySpec"]]
    return keys


def evaluate_policy(
    policy: Mapping[str, Any],
    action: str,
    pcrs: Mapping[int, str] | None = None,
    *,
    key_arn: str = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000",
    caller: str | None = None,
    keys: Mapping[str, list[str]] | None = None,
) -> tuple[bool, str]:
    """(allowed, reason) for ``action`` on ``key_arn`` by ``caller`` (default: the key account's root)
    with the attested ``pcrs`` (None: the request carried no Recipient) or the given condition keys."""
    account = kms_policy.account_of_arn(key_arn)
    who = caller or f"arn:aws:iam::{account}:root"
    if keys is None:
        keys = request_keys(action, {}, caller=who, account=account, pcrs=pcrs)
    ctx = kms_policy.RequestContext(
        action=action, key_arn=key_arn, caller_arn=who, account=account, keys=keys
    )
    decision = kms_policy.evaluate(policy, ctx)
    if decision.allowed or decision.unevaluable or not decision.mismatched:
        return decision.allowed, decision.reason
    if not any(k.startswith(CONDITION_PREFIX) for k in keys):
        return False, (
            f"the key policy allows kms:{action} only to an attested enclave "
            f"({', '.join(repr(s) for s in decision.mismatched)}): this request carries no Recipient"
        )
    return False, (
        f"the enclave's measurements do not match the key policy "
        f"({', '.join(repr(s) for s in decision.mismatched)})"
    )


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
        if (
            self.headers.get("Transfer-Encoding")
            or self.headers.get("Content-Encoding", "identity") != "identity"
        ):
            # a body we did not read whole, or cannot read as sent, is not judged: never forwarded
            self._reply_error(
                KmsLayerError("SerializationException", "send a plain JSON body with Content-Length")
            )
            self.close_connection = True
            return
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower()
            not in ("host", "content-length", "connection", "transfer-encoding", "content-encoding")
        }
        target = self.headers.get("X-Amz-Target", "")
        action = (
            target.rsplit(".", 1)[-1] if target.startswith("TrentService.") and target.count(".") == 1 else ""
        )
        try:
            request = json.loads(body) if body.strip() else {}
        except ValueError:
            request = None
        try:
            if not action:
                raise KmsLayerError("UnknownOperationException", f"not a KMS operation: {target[:80]!r}")
            if not isinstance(request, dict):
                raise KmsLayerError("SerializationException", "the request body is not a JSON object")
            source_ip = str(self.client_address[0]) if self.client_address else None
            if "Recipient" in request:
                result = self.server.layer.with_recipient(action, request, headers, source_ip=source_ip)
                self._reply(200, json.dumps(result).encode(), "application/x-amz-json-1.1")
                return
            status, rheaders, rbody = self.server.layer.plain(action, request, headers, source_ip=source_ip)
        except KmsLayerError as err:
            self._reply_error(err)
            return
        self._reply(status, rbody, rheaders.get("Content-Type", "application/x-amz-json-1.1"))

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


@dataclass(frozen=True)
class _Key:
    arn: str
    metadata: dict[str, Any]


class RecipientLayer:
    """KMS's key policies and Recipient semantics in front of a moto endpoint.

    ``caller`` is the principal ARN every request is judged as; None means the root of the key's
    account (moto authenticates everything as its one account)."""

    def __init__(
        self,
        moto_url: str,
        verifier: Verifier = verify_document,
        caller: str | None = None,
        app: Any = None,
    ) -> None:
        self.moto_url = moto_url.rstrip("/")
        #: moto's WSGI application, called in-process: no port of moto's own that bypasses the layer
        self.app = app
        self.verifier = verifier
        self.caller = caller
        # (action, allowed, reason), for tests and ops; bounded, the server may run for days
        self.decisions: deque[tuple[str, bool, str]] = deque(maxlen=1000)

    def forward(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        if self.app is not None:
            return self._call_app(body, headers)
        req = urllib.request.Request(self.moto_url + "/", data=body, headers=dict(headers), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers.items()), resp.read(MAX_BODY)
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read(MAX_BODY)
        except (urllib.error.URLError, OSError) as exc:
            down = {"__type": "KMSInternalException", "message": f"the local KMS store is down: {exc}"}
            return 500, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(down).encode()

    def _call_app(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        from werkzeug.test import Client

        try:
            resp = Client(self.app).post("/", data=body, headers=dict(headers))
            return resp.status_code, dict(resp.headers.items()), resp.get_data()[:MAX_BODY]
        except Exception as exc:  # noqa: BLE001 - moto's failure is the store's, answered as KMS would
            down = {
                "__type": "KMSInternalException",
                "message": f"the local KMS store failed: {type(exc).__name__}",
            }
            return 500, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(down).encode()

    def _moto(self, action: str, request: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
        h = dict(headers)
        h["X-Amz-Target"] = f"TrentService.{action}"
        status, _rh, body = self.forward(json.dumps(request).encode(), h)
        return _moto_answer(status, body)

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

    def _resolve(self, key_id: Any, headers: Mapping[str, str], field_name: str = "KeyId") -> _Key:
        """KeyId (ID, ARN, alias name or alias ARN) -> the key's ARN and metadata, as moto has it now."""
        if not isinstance(key_id, str) or not key_id or len(key_id) > 2048:
            raise KmsLayerError(
                "ValidationException", f"{field_name} is required and must be a key ID, ARN or alias"
            )
        try:
            meta = self._moto("DescribeKey", {"KeyId": key_id}, headers).get("KeyMetadata")
        except KmsLayerError as exc:
            if exc.kms_type != "AccessDeniedException":
                raise
            # moto applies Deny statements to DescribeKey itself (ignoring their conditions); the
            # key is then found through the listings, without its metadata (kms:KeySpec ... absent)
            return self._resolve_by_listing(key_id, headers)
        if not isinstance(meta, dict) or not isinstance(meta.get("Arn"), str):
            raise KmsLayerError("KMSInternalException", "the local KMS store described no key")
        return _Key(meta["Arn"], meta)

    def _resolve_by_listing(self, key_id: str, headers: Mapping[str, str]) -> _Key:
        wanted = key_id
        if "alias/" in key_id:
            aliases = self._moto("ListAliases", {}, headers).get("Aliases") or []
            name = key_id[key_id.index("alias/") :]
            target = next(
                (a.get("TargetKeyId") for a in aliases if isinstance(a, dict) and a.get("AliasName") == name),
                None,
            )
            if not isinstance(target, str):
                raise KmsLayerError("NotFoundException", f"Alias {name[:256]} is not found.")
            wanted = target
        for k in self._moto("ListKeys", {}, headers).get("Keys") or []:
            if isinstance(k, dict) and wanted in (k.get("KeyId"), k.get("KeyArn")):
                return _Key(str(k["KeyArn"]), {"KeyId": k.get("KeyId"), "Arn": k["KeyArn"]})
        raise KmsLayerError("NotFoundException", f"Invalid keyId {key_id[:256]}")

    def _authorize(
        self,
        action: str,
        key: _Key,
        request: Mapping[str, Any],
        headers: Mapping[str, str],
        *,
        attested: Attested | None = None,
        source_ip: str | None = None,
        encryption_context: Mapping[str, str] | None = None,
    ) -> None:
        account = kms_policy.account_of_arn(key.arn)
        caller = self.caller or f"arn:aws:iam::{account}:root"
        keys = request_keys(
            action,
            request,
            caller=caller,
            account=account,
            pcrs=attested.pcrs if attested else None,
            key_metadata=key.metadata,
            source_ip=source_ip,
            encryption_context=encryption_context,
        )
        policy = self._policy(key.arn, headers)
        allowed, reason = evaluate_policy(policy, action, key_arn=key.arn, caller=caller, keys=keys)
        self.decisions.append((action, allowed, reason))
        log.info(
            "kms %s key=%s recipient=%s: %s",
            action,
            key.arn,
            "yes" if attested else "no",
            "allowed" if allowed else f"denied: {reason}",
        )
        if allowed:
            return
        if attested is not None and attested.pcrs.get(0, ZERO_PCR) == ZERO_PCR:
            reason = "the enclave runs in debug mode (all-zero PCRs); a key policy pinned to PCRs never releases keys to it"
        what = "with this attestation document" if attested is not None else "on this key"
        raise KmsLayerError(
            "AccessDeniedException",
            f"User: {caller} is not authorized to perform kms:{action} {what}: {reason}",
        )

    def plain(
        self, action: str, request: dict[str, Any], headers: Mapping[str, str], source_ip: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """A request without Recipient: judged by the key policy, then moto's answer (or a refusal)."""
        h = dict(headers)
        h["X-Amz-Target"] = f"TrentService.{action}"
        if action in KEYLESS_ACTIONS:
            return self.forward(json.dumps(request).encode(), h)
        if action == "Decrypt":
            status, rheaders, body = self.forward(json.dumps(request).encode(), h)
            if status != 200:
                return status, rheaders, body
            out = _moto_answer(status, body)
            key = self._resolve(out.get("KeyId"), headers)
            self._authorize(action, key, request, headers, source_ip=source_ip)
            return status, rheaders, body
        if action == "ReEncrypt":
            dest = self._resolve(request.get("DestinationKeyId"), headers, "DestinationKeyId")
            dest_ctx = _context_map(
                request.get("DestinationEncryptionContext"), "DestinationEncryptionContext"
            )
            self._authorize(
                "ReEncryptTo", dest, request, headers, source_ip=source_ip, encryption_context=dest_ctx
            )
            request = {**request, "DestinationKeyId": dest.arn}
            status, rheaders, body = self.forward(json.dumps(request).encode(), h)
            if status != 200:
                return status, rheaders, body
            source = self._resolve(_moto_answer(status, body).get("SourceKeyId"), headers)
            src_ctx = _context_map(request.get("SourceEncryptionContext"), "SourceEncryptionContext")
            self._authorize(
                "ReEncryptFrom", source, request, headers, source_ip=source_ip, encryption_context=src_ctx
            )
            return status, rheaders, body
        if action in ("CreateAlias", "UpdateAlias", "DeleteAlias"):
            if action != "CreateAlias":
                # the key the alias names now: an alias is moved or deleted only with that key's consent
                current = self._resolve(request.get("AliasName"), headers, "AliasName")
                self._authorize(action, current, request, headers, source_ip=source_ip)
            if action != "DeleteAlias":
                target = self._resolve(request.get("TargetKeyId"), headers, "TargetKeyId")
                self._authorize(action, target, request, headers, source_ip=source_ip)
                request = {**request, "TargetKeyId": str(target.metadata.get("KeyId") or target.arn)}
            return self.forward(json.dumps(request).encode(), h)
        if action in KEY_ACTIONS:
            key = self._resolve(request.get("KeyId"), headers)
            self._authorize(action, key, request, headers, source_ip=source_ip)
            # moto acts on the ARN just judged, not on a name that may point elsewhere by now
            return self.forward(json.dumps({**request, "KeyId": key.arn}).encode(), h)
        raise KmsLayerError("UnsupportedOperationException", f"the local KMS does not support {action[:80]}")

    def with_recipient(
        self,
        action: str,
        request: dict[str, Any],
        headers: Mapping[str, str],
        source_ip: str | None = None,
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
            key = self._resolve(out.get("KeyId"), headers)
            self._authorize(action, key, request, headers, attested=attested, source_ip=source_ip)
            plaintext = base64.b64decode(out.pop("Plaintext", ""))
            out["CiphertextForRecipient"] = base64.b64encode(
                cms.build_enveloped(plaintext, attested.public_key)
            ).decode()
            return out
        if action == "GenerateDataKey":
            key = self._resolve(request.get("KeyId"), headers)
            self._authorize(action, key, request, headers, attested=attested, source_ip=source_ip)
            out = self._moto("GenerateDataKey", {**request, "KeyId": key.arn}, headers)
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


def _moto_answer(status: int, body: bytes) -> dict[str, Any]:
    """moto's JSON answer, or its error as a KmsLayerError of the same type."""
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


class LocalKms:
    """moto + the Recipient layer, in-process. ``endpoint_url`` is what clients (and vsock-proxy) use."""

    def __init__(self, verifier: Verifier = verify_document, caller: str | None = None) -> None:
        self._verifier = verifier
        #: who every request is judged as; None: the emulated instance's IAM role when instance.yaml
        #: names one (an enclave's requests carry the parent's role credentials), else the account root
        self.caller = caller
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
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        # moto runs in-process behind the layer only: an HTTP server of its own on loopback would let any
        # local process (or user) decrypt whatever a key policy protects, bypassing the layer
        self._moto = DomainDispatcherApplication(create_backend_app)
        self.moto_url = "in-process"
        self.layer = RecipientLayer("", self._verifier, self.caller or instance_role(), app=self._moto)
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


LOCAL_KMS_TAG = "# added by nitrodeck kms local-server"


def allow_in_proxy_config(port: int, path: Path | None = None) -> Path:
    """Add 127.0.0.1:``port`` to the emulator's vsock-proxy.yaml (created with the stock KMS entry
    if absent), as an operator would for a new endpoint; existing entries are left as they are.

    The line is tagged (:data:`LOCAL_KMS_TAG`), so :func:`withdraw_from_proxy_config` removes it
    when the server stops, and entries of servers that died without stopping are removed here
    (a tagged port nothing listens on): the list no longer grows by one port per start.
    """
    from core.channel.proxy import load_allowlist

    target = path or home.emulator_etc() / "vsock-proxy.yaml"
    home.ensure(target.parent)
    if target.exists():
        _rewrite(target, lambda line: _tagged_port(line) in (None, port) or _listening(_tagged_port(line)))
        if any(e.address == "127.0.0.1" and e.port == port for e in load_allowlist(target)):
            return target
        text = target.read_text()
    else:
        text = "allowlist:\n- {address: kms.us-east-1.amazonaws.com, port: 443}\n"
    text += ("" if text.endswith("\n") else "\n") + f"- {{address: 127.0.0.1, port: {port}}}  {LOCAL_KMS_TAG}\n"
    _replace_text(target, text)
    return target


def withdraw_from_proxy_config(port: int, path: Path | None = None) -> None:
    """Remove the tagged 127.0.0.1:``port`` line :func:`allow_in_proxy_config` added (others stay)."""
    target = path or home.emulator_etc() / "vsock-proxy.yaml"
    if target.exists():
        _rewrite(target, lambda line: _tagged_port(line) != port)


def _tagged_port(line: str) -> int | None:
    if not line.rstrip().endswith(LOCAL_KMS_TAG):
        return None
    match = re.search(r"port:\s*(\d+)", line)
    return int(match.group(1)) if match else None


def _listening(port: int | None) -> bool:
    import socket

    if port is None:
        return False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _rewrite(target: Path, keep: Callable[[str], bool]) -> None:
    text = target.read_text()
    lines = text.splitlines(keepends=True)
    kept = [line for line in lines if keep(line)]
    if len(kept) != len(lines):
        _replace_text(target, "".join(kept))


def _replace_text(target: Path, text: str) -> None:
    # whole-file replace: a proxy starting now reads the old list or the new one, never half
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(target)


def instance_role() -> str | None:
    """The emulated parent instance's IAM role ARN, if instance.yaml exists and names one."""
    path = home.emulator_instance_file()
    if not path.is_file():
        return None  # not created here: reading the model must not write it
    try:
        from emulator.instance import load_instance

        role = load_instance(path).iam_role_arn
    except (NitrodeckError, OSError):
        return None
    return role if role and role.startswith("arn:aws:iam::") else None


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
