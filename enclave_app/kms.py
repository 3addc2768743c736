"""In-enclave KMS client: attested key release (Recipient) and the protocol methods for it.

Methods registered with the payload:

* ``set_credentials`` {access_key_id, secret_access_key, session_token, expiration, region}: the
  parent's AWS credentials, held in memory only, never logged, refused once expired.
* ``provision`` {ciphertext, key_id?, region?, endpoint_url?, proxy_port?}: KMS Decrypt with a
  Recipient; the released secp256k1 key becomes the payload's signing key.
* ``kms_generate_random`` {length} and ``kms_generate_data_key`` {key_id, key_spec?}: the same
  Recipient flow for GenerateRandom / GenerateDataKey (the data key's plaintext stays inside).

Each release makes a fresh RSA-2048 key pair, asks the NSM for an attestation document carrying its
public key, and decrypts KMS's CiphertextForRecipient with core.crypto.cms. KMS traffic leaves the enclave
through enclave_app.forwarder (TCP loopback -> vsock -> the parent's vsock-proxy).

The parent is not trusted: on Nitro only TLS to kms.<region>.amazonaws.com is used (no
parent-chosen endpoints), and an image that sets NITRODECK_KMS_KEY_ARNS accepts keys only from
those KMS keys.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from core.channel.protocol import BAD_PARAMS, ProtocolError, require_bytes
from core.crypto import cms
from core.kms.client import (
    DEFAULT_PROXY_PORT,
    DEFAULT_REGION,
    KEY_ENCRYPTION_ALGORITHM,
    MAX_CIPHERTEXT,
    AwsCredentials,
    CredentialsError,
    KmsError,
    check_region,
    kms_call,
    kms_client,
)
from enclave_app.forwarder import Forwarder, loopback_up, map_host_to_loopback
from enclave_app.methods import EnclaveContext, register_method


class _State:
    """Credentials and forwarders of this enclave process (memory only)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.credentials: AwsCredentials | None = None
        self.forwarders: dict[int, Forwarder] = {}

    def current_credentials(self) -> AwsCredentials:
        with self.lock:
            creds = self.credentials
        if creds is None:
            raise CredentialsError(
                "no AWS credentials: the parent has not called set_credentials",
                where="enclave kms",
                hint="run `nitrodeck up`, or `nitrodeck provision --credentials`",
            )
        if creds.expired():
            raise CredentialsError(
                f"the AWS credentials expired at {creds.expiration.isoformat() if creds.expiration else '?'}; refused",
                where="enclave kms",
                hint="the parent must send fresh credentials (set_credentials) before they expire",
            )
        return creds

    def forwarder(self, proxy_port: int, local_port: int = 0) -> Forwarder:
        with self.lock:
            fwd = self.forwarders.get(proxy_port)
            if fwd is None or not fwd.running:
                fwd = Forwarder(proxy_port, local_port=local_port).start()
                self.forwarders[proxy_port] = fwd
            return fwd


STATE = _State()


def _int_param(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError(f"{name} must be an integer {low}..{high}", wire_code=BAD_PARAMS)
    return value


def _str_param(params: Mapping[str, Any], name: str, max_len: int = 2048) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ProtocolError(f"{name} must be text of 1..{max_len} characters", wire_code=BAD_PARAMS)
    return value


def endpoint_for(params: Mapping[str, Any], region: str) -> str:
    """Where boto3 sends KMS calls: an explicit endpoint, else the local forwarder.

    Under the emulator KMS is plain HTTP on the parent's loopback, so the forwarder's URL is used
    as is. On Nitro the name kms.<region>.amazonaws.com must resolve to 127.0.0.1 inside the
    enclave (an /etc/hosts line in the image) so TLS verification sees the real host name.
    """
    explicit = _str_param(params, "endpoint_url")
    proxy_port = _int_param(params, "proxy_port", DEFAULT_PROXY_PORT, 1, 0xFFFFFFFF)
    emulated = bool(os.environ.get("NITRODECK_VSOCK_DIR"))
    if explicit:
        # The parent is not trusted: on Nitro, a parent-chosen endpoint could be a fake KMS over
        # plain HTTP that hands the enclave a key the parent knows. Only TLS to the real name.
        if not emulated:
            raise KmsError("endpoint_url is accepted only under the emulator", where="provision")
        return explicit
    if emulated:
        return f"http://127.0.0.1:{STATE.forwarder(proxy_port).port}"
    # On Nitro: lo up, the regional name on 127.0.0.1, the forwarder on 443, TLS as usual.
    host = f"kms.{region}.amazonaws.com"
    loopback_up()
    map_host_to_loopback(host)
    STATE.forwarder(proxy_port, local_port=443)
    return f"https://{host}"


#: KMS key ARNs this image accepts keys from (comma-separated). Set it in the image (Dockerfile
#: ENV), where it is measured: then a parent holding credentials for some other key (its own
#: account, a policy open to any enclave) cannot make the enclave adopt a key the parent knows.
ENV_TRUSTED_KEYS = "NITRODECK_KMS_KEY_ARNS"


def check_trusted_key(key_arn: str) -> None:
    pinned = [k.strip() for k in os.environ.get(ENV_TRUSTED_KEYS, "").split(",") if k.strip()]
    if pinned and key_arn not in pinned:
        raise KmsError(
            f"KMS released a key of {key_arn[:200] or 'an unnamed key'}, which this image does not trust",
            where="provision",
            hint=f"the image pins {ENV_TRUSTED_KEYS}; seal the wallet key under one of those keys",
        )


class Recipient:
    """One ephemeral RSA-2048 key pair and the attestation document that carries its public key."""

    def __init__(self, key: rsa.RSAPrivateKey, document: bytes) -> None:
        self._key = key
        self.document = document

    def request(self) -> dict[str, Any]:
        return {"AttestationDocument": self.document, "KeyEncryptionAlgorithm": KEY_ENCRYPTION_ALGORITHM}

    def open(self, response: Mapping[str, Any], operation: str) -> bytes:
        blob = response.get("CiphertextForRecipient")
        if not blob:
            raise KmsError("KMS answered without CiphertextForRecipient", where=f"kms:{operation}")
        if response.get("Plaintext"):
            # a KMS that ignored Recipient sent the secret in clear over the proxy: refuse to use it
            raise KmsError(
                "KMS returned a plaintext despite the Recipient; refusing it", where=f"kms:{operation}"
            )
        return cms.decrypt(bytes(blob), self._key)


async def make_recipient(ctx: EnclaveContext) -> Recipient:
    loop = asyncio.get_running_loop()
    key = await loop.run_in_executor(
        None, lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    document = await ctx.nsm.attestation(None, None, spki)
    return Recipient(key, document)


def _client(params: Mapping[str, Any]) -> tuple[Any, AwsCredentials]:
    creds = STATE.current_credentials()
    region = check_region(_str_param(params, "region", 64) or creds.region or DEFAULT_REGION, "kms region")
    return kms_client(region, endpoint_for(params, region), creds), creds


async def _blocking(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# --- methods ----------------------------------------------------------------------------------------


def set_credentials(ctx: EnclaveContext, params: Mapping[str, Any]) -> dict[str, Any]:
    creds = AwsCredentials.from_wire(params)
    if creds.expired():
        raise CredentialsError(
            "refusing credentials that have already expired",
            where="set_credentials",
            hint="the parent's session is stale: refresh its role credentials",
        )
    with STATE.lock:
        STATE.credentials = creds
    ctx.log(f"kms: credentials set (region={creds.region}, expires={creds.expiration or 'never'})")
    return {
        "ok": True,
        "region": creds.region,
        "expiration": creds.expiration.isoformat() if creds.expiration else None,
    }


async def provision(ctx: EnclaveContext, params: Mapping[str, Any]) -> dict[str, Any]:
    ciphertext = require_bytes(params, "ciphertext", max_len=MAX_CIPHERTEXT)
    assert ciphertext is not None
    key_id = _str_param(params, "key_id")
    client, _creds = _client(params)
    recipient = await make_recipient(ctx)
    request: dict[str, Any] = {"CiphertextBlob": ciphertext, "Recipient": recipient.request()}
    if key_id:
        request["KeyId"] = key_id
    response = await _blocking(lambda: kms_call(client, "decrypt", **request))
    check_trusted_key(str(response.get("KeyId", "")))
    secret = recipient.open(response, "Decrypt")
    try:
        ctx.keys.set_signing_key(secret, source="kms")
    finally:
        del secret
    public = ctx.keys.public_key_der("secp256k1")
    ctx.log(f"kms: signing key released by KMS (key {response.get('KeyId', '?')})")
    return {"key_id": response.get("KeyId"), "key_source": "kms", "public_key": public}


async def generate_random(ctx: EnclaveContext, params: Mapping[str, Any]) -> dict[str, Any]:
    length = _int_param(params, "length", 32, 1, 1024)
    client, _ = _client(params)
    recipient = await make_recipient(ctx)
    response = await _blocking(
        lambda: kms_call(client, "generate_random", NumberOfBytes=length, Recipient=recipient.request())
    )
    data = recipient.open(response, "GenerateRandom")
    if len(data) != length:
        raise KmsError(
            f"KMS returned {len(data)} random bytes, asked for {length}", where="kms:GenerateRandom"
        )
    return {"random": data}


async def generate_data_key(ctx: EnclaveContext, params: Mapping[str, Any]) -> dict[str, Any]:
    key_id = _str_param(params, "key_id")
    if not key_id:
        raise ProtocolError("key_id is required", wire_code=BAD_PARAMS)
    spec = params.get("key_spec", "AES_256")
    if spec not in ("AES_256", "AES_128"):
        raise ProtocolError("key_spec must be AES_256 or AES_128", wire_code=BAD_PARAMS)
    client, _ = _client(params)
    recipient = await make_recipient(ctx)
    response = await _blocking(
        lambda: kms_call(
            client, "generate_data_key", KeyId=key_id, KeySpec=spec, Recipient=recipient.request()
        )
    )
    check_trusted_key(str(response.get("KeyId", "")))
    data_key = recipient.open(response, "GenerateDataKey")
    # the data key stays inside; the parent learns only that it exists and its sealed form
    return {
        "key_id": response.get("KeyId"),
        "ciphertext_blob": bytes(response["CiphertextBlob"]),
        "plaintext_length": len(data_key),
    }


register_method("set_credentials", set_credentials)
register_method("provision", provision)
register_method("kms_generate_random", generate_random)
register_method("kms_generate_data_key", generate_data_key)
