"""KMS key release on the parent's side: credentials handed to the enclave, key policies pinned to
PCRs, sealing a wallet key (`nitrodeck kms seal`) and provisioning it into an enclave (`provision`).

The wallet key's plaintext exists on the parent only for the moment of ``kms:Encrypt`` during
sealing (generated in memory, or read once from the operator's file); it is never written, printed
or logged. After sealing only the enclave can get it back, through KMS with its attestation document.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from core.errors import ConfigError, NitrodeckError

RECIPIENT_ACTIONS = ("Decrypt", "GenerateDataKey", "GenerateRandom")
KEY_ENCRYPTION_ALGORITHM = "RSAES_OAEP_SHA_256"
DEFAULT_REGION = "us-east-1"
DEFAULT_PROXY_PORT = 8000
MAX_CIPHERTEXT = 6144  # KMS ciphertext blobs for a 4 KiB plaintext stay well under this
MAX_KEY_FILE = 16 * 1024
_MAX_FIELD = 4096
#: administrative actions the operator keeps; key *use* is left to the PCR-pinned statement only
ADMIN_ACTIONS = (
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:Encrypt",
)


class KmsError(NitrodeckError):
    """A KMS call, a sealed key, or the release flow failed."""

    code = "ND-KMS"


_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")


def check_region(region: str, where: str) -> str:
    """Regions become host names (kms.<region>.amazonaws.com): accept only the AWS shape."""
    if not _REGION.fullmatch(region):
        raise KmsError(f"{region[:40]!r} is not an AWS region name", where=where, hint="e.g. us-east-1")
    return region


class CredentialsError(NitrodeckError):
    """AWS credentials are missing, malformed or expired."""

    code = "ND-CREDENTIALS"


# --- credentials ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AwsCredentials:
    """Temporary (or long-term) AWS credentials. ``repr`` never shows the secret or the token."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expiration: dt.datetime | None = None
    region: str = DEFAULT_REGION

    def expired(self, now: dt.datetime | None = None, margin: float = 0.0) -> bool:
        if self.expiration is None:
            return False
        now = now or dt.datetime.now(dt.UTC)
        return self.expiration - dt.timedelta(seconds=margin) <= now

    def seconds_left(self, now: dt.datetime | None = None) -> float | None:
        if self.expiration is None:
            return None
        return (self.expiration - (now or dt.datetime.now(dt.UTC))).total_seconds()

    def to_wire(self) -> dict[str, Any]:
        """The ``set_credentials`` parameters."""
        return {
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "session_token": self.session_token,
            "expiration": self.expiration.isoformat() if self.expiration else None,
            "region": self.region,
        }

    @classmethod
    def from_wire(cls, params: Mapping[str, Any], where: str = "set_credentials") -> AwsCredentials:
        def text(name: str, optional: bool = False) -> str | None:
            value = params.get(name)
            if value is None and optional:
                return None
            if not isinstance(value, str) or not value or len(value) > _MAX_FIELD:
                raise CredentialsError(
                    f"{name} must be non-empty text of at most {_MAX_FIELD} characters", where=where
                )
            return value

        access = text("access_key_id")
        secret = text("secret_access_key")
        token = text("session_token", optional=True)
        region = check_region(text("region", optional=True) or DEFAULT_REGION, where)
        exp_text = text("expiration", optional=True)
        expiration = None
        if exp_text is not None:
            try:
                expiration = dt.datetime.fromisoformat(exp_text.replace("Z", "+00:00"))
            except ValueError as exc:
                raise CredentialsError("expiration is not an ISO 8601 time", where=where) from exc
            if expiration.tzinfo is None:
                expiration = expiration.replace(tzinfo=dt.UTC)
        assert access is not None and secret is not None
        return cls(access, secret, token, expiration, region)


def session_credentials(region: str | None = None, profile: str | None = None) -> AwsCredentials:
    """This process's credentials from boto3's chain (environment, profile, container or instance role)."""
    import boto3
    import botocore.exceptions

    try:
        session = boto3.Session(profile_name=profile, region_name=region)
        creds = session.get_credentials()
    except botocore.exceptions.BotoCoreError as exc:
        raise CredentialsError(f"cannot load AWS credentials: {exc}", where="boto3 session") from exc
    if creds is None:
        raise CredentialsError(
            "no AWS credentials found",
            where="boto3 session",
            hint="give the task an IAM role, or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a profile",
        )
    frozen = creds.get_frozen_credentials()
    # refreshable credentials (instance or task role) know when they end; static ones do not
    expiry = getattr(creds, "_expiry_time", None)
    expiration = expiry.astimezone(dt.UTC) if isinstance(expiry, dt.datetime) else None
    return AwsCredentials(
        frozen.access_key,
        frozen.secret_key,
        frozen.token,
        expiration,
        region or session.region_name or DEFAULT_REGION,
    )


# --- policies ---------------------------------------------------------------------------------------


def pcr_conditions(pcrs: Mapping[int, str]) -> dict[str, str]:
    """ImageSha384 is PCR0; the other PCRs go by index. Values are lower-case hex."""
    cond: dict[str, str] = {}
    if 0 in pcrs:
        cond["kms:RecipientAttestation:ImageSha384"] = pcrs[0].lower()
    for index, value in sorted(pcrs.items()):
        if index != 0:
            cond[f"kms:RecipientAttestation:PCR{index}"] = value.lower()
    return cond


def enclave_statement(
    pcrs: Mapping[int, str], principal: str, actions: Sequence[str] = RECIPIENT_ACTIONS
) -> dict[str, Any]:
    return {
        "Sid": "Enclave key release pinned to the EIF measurements",
        "Effect": "Allow",
        "Principal": {"AWS": principal},
        "Action": [f"kms:{a}" for a in actions],
        "Resource": "*",
        "Condition": {"StringEqualsIgnoreCase": pcr_conditions(pcrs)},
    }


def key_policy(pcrs: Mapping[int, str], account_id: str, principal: str | None = None) -> dict[str, Any]:
    """A key policy: the account administers the key (and may Encrypt), only the attested EIF may use it."""
    root = f"arn:aws:iam::{account_id}:root"
    return {
        "Version": "2012-10-17",
        "Id": "nitrodeck-enclave-key",
        "Statement": [
            {
                "Sid": "Key administration and sealing",
                "Effect": "Allow",
                "Principal": {"AWS": root},
                "Action": list(ADMIN_ACTIONS),
                "Resource": "*",
            },
            enclave_statement(pcrs, principal or root),
        ],
    }


def account_of(key_arn: str) -> str:
    parts = key_arn.split(":")
    if len(parts) < 6 or not parts[4].isdigit():
        raise KmsError(f"not a KMS key ARN: {key_arn[:120]!r}", where="DescribeKey")
    return parts[4]


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


# --- KMS client -------------------------------------------------------------------------------------


def kms_client(
    region: str | None = None, endpoint_url: str | None = None, credentials: AwsCredentials | None = None
) -> Any:
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {
        "region_name": region or (credentials.region if credentials else None) or _env_region(),
        "config": Config(
            retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=10, read_timeout=30
        ),
    }
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    if credentials is not None:
        kwargs.update(
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token,
        )
    return boto3.client("kms", **kwargs)


def _env_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def kms_call(client: Any, operation: str, **params: Any) -> dict[str, Any]:
    """One KMS call; AWS errors become KmsError with KMS's own code and message."""
    import botocore.exceptions

    try:
        result: dict[str, Any] = getattr(client, operation)(**params)
        return result
    except botocore.exceptions.ClientError as exc:
        err = exc.response.get("Error", {})
        raise KmsError(
            f"{err.get('Code', 'Error')}: {err.get('Message', '')}", where=f"kms:{operation}"
        ) from exc
    except botocore.exceptions.NoCredentialsError as exc:
        raise CredentialsError(
            "no AWS credentials found",
            where=f"kms:{operation}",
            hint="give the task an IAM role, or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a profile",
        ) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise KmsError(f"KMS is unreachable: {exc}", where=f"kms:{operation}") from exc


def default_endpoint(emulated: bool) -> str | None:
    """Under the emulator, the local KMS if one runs (`nitrodeck kms local-server`); else AWS."""
    if not emulated:
        return None
    from emulator.kms import read_endpoint_file

    return read_endpoint_file()


# --- seal -------------------------------------------------------------------------------------------


@dataclass
class SealReport:
    key_arn: str
    measurements: dict[int, str]
    policy: dict[str, Any]
    applied: bool
    #: None when nothing was sealed (without --apply the policy is only shown for review)
    ciphertext_file: str | None
    public_key_hex: str | None
    public_key_der: bytes | None = field(repr=False)

    @property
    def policy_json(self) -> str:
        return json.dumps(self.policy, indent=2)

    def as_dict(self) -> dict[str, Any]:
        return {
            "KeyArn": self.key_arn,
            "Measurements": {f"PCR{i}": v for i, v in sorted(self.measurements.items())},
            "Policy": self.policy,
            "PolicyApplied": self.applied,
            "CiphertextFile": self.ciphertext_file,
            "WalletPublicKey": self.public_key_hex,
            "WalletPublicKeyDer": self.public_key_der.hex() if self.public_key_der is not None else None,
        }


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    tmp.replace(path)


def _seal_body(
    *,
    key_id: str,
    eif: Path,
    generate: str | None,
    in_file: Path | None,
    apply: bool,
    endpoint_url: str | None,
    region: str | None,
    principal: str | None,
    out: Path | None,
) -> SealReport:
    from core.measure import measure_eif

    if generate not in (None, "secp256k1"):
        raise ConfigError(f"cannot generate {generate!r} keys", where="--generate", hint="use secp256k1")
    if not eif.is_file():
        raise ConfigError(f"no EIF at {eif}", where="--eif")
    pcrs = measure_eif(eif).pcrs()
    if endpoint_url is None:
        from core.backend import select_backend

        endpoint_url = default_endpoint(select_backend().is_emulator)
    client = kms_client(region, endpoint_url)
    described = kms_call(client, "describe_key", KeyId=key_id)
    arn = str(described["KeyMetadata"]["Arn"])
    policy = key_policy(pcrs, account_of(arn), principal)
    if in_file is not None:
        try:
            with open(in_file, "rb") as fh:
                data = fh.read(MAX_KEY_FILE + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read the key file: {exc.strerror}", where="--in") from exc
        if len(data) > MAX_KEY_FILE:
            raise ConfigError("the key file is too large to be a private key", where="--in")
        wallet = load_wallet_key(data, "--in")  # checked now, so a bad file shows up at review time
        del data
    elif not apply:
        wallet = None
    else:
        wallet = ec.generate_private_key(ec.SECP256K1())
    if not apply or wallet is None:
        # review first: nothing is generated or encrypted under a policy that is not in place yet
        del wallet
        return SealReport(arn, pcrs, policy, False, None, None, None)
    kms_call(client, "put_key_policy", KeyId=arn, PolicyName="default", Policy=json.dumps(policy))
    blob = kms_call(client, "encrypt", KeyId=arn, Plaintext=raw_scalar(wallet))["CiphertextBlob"]
    target = out or eif.with_name(eif.name + ".wallet.kms")
    _write_private(target, bytes(blob))
    return SealReport(arn, pcrs, policy, True, str(target), wallet_public_hex(wallet), wallet_spki(wallet))


class _Sealer:
    """Owner object for the mutating decorator (read-only flag, default audit log)."""

    def __init__(self, read_only: bool) -> None:
        self.read_only = read_only


def seal(
    *,
    key_id: str,
    eif: Path,
    generate: str | None = None,
    in_file: Path | None = None,
    apply: bool = False,
    endpoint_url: str | None = None,
    region: str | None = None,
    principal: str | None = None,
    out: Path | None = None,
    read_only: bool = False,
) -> SealReport:
    """`nitrodeck kms seal`: see the module docstring. Mutating (audited; refused when read-only)."""
    from core.lifecycle import mutating, note_command

    @mutating("kms-seal")
    def run(_owner: _Sealer) -> SealReport:
        note_command(["kms", "seal", "--key-id", key_id, "--eif", str(eif), *(["--apply"] if apply else [])])
        return _seal_body(
            key_id=key_id,
            eif=eif,
            generate=generate,
            in_file=in_file,
            apply=apply,
            endpoint_url=endpoint_url,
            region=region,
            principal=principal,
            out=out,
        )

    return run(_Sealer(read_only))


# --- provision --------------------------------------------------------------------------------------


def read_ciphertext(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CIPHERTEXT + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the ciphertext: {exc.strerror}", where=str(path)) from exc
    if not data or len(data) > MAX_CIPHERTEXT:
        raise ConfigError(f"the ciphertext must be 1..{MAX_CIPHERTEXT} bytes", where=str(path))
    return data


def provision_params(
    ciphertext: bytes,
    *,
    key_id: str | None,
    region: str | None,
    proxy_port: int = DEFAULT_PROXY_PORT,
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"ciphertext": ciphertext, "proxy_port": proxy_port}
    if key_id:
        params["key_id"] = key_id
    if region:
        params["region"] = region
    if endpoint_url:
        params["endpoint_url"] = endpoint_url
    return params


def provision_enclave(
    enclave: str,
    ciphertext_file: Path,
    *,
    key_id: str | None = None,
    region: str | None = None,
    proxy_port: int = DEFAULT_PROXY_PORT,
    port: int = 5005,
    send_credentials: bool = False,
    backend_flag: str | None = None,
    read_only: bool = False,
) -> dict[str, Any]:
    """`nitrodeck provision`: hand the sealed key (and optionally credentials) to a running enclave."""
    from core.lifecycle import Lifecycle, mutating, note_command
    from core.protocol import BlockingClient

    lifecycle = (
        Lifecycle(read_only=read_only) if backend_flag is None else _lifecycle_for(backend_flag, read_only)
    )
    ciphertext = read_ciphertext(ciphertext_file)

    @mutating("provision")
    def run(owner: Any) -> dict[str, Any]:
        info = owner.find(enclave)
        note_command(["provision", info.enclave_id, "--ciphertext", str(ciphertext_file)])
        try:
            sock = owner.backend.transport().connect(info.cid, port, timeout=10)
        except OSError as exc:
            raise KmsError(
                f"cannot reach the enclave on vsock {info.cid}:{port}: {exc}",
                where="provision",
                hint="is it running the nitrodeck payload?",
            ) from exc
        with BlockingClient(sock) as client:
            if send_credentials:
                client.call("set_credentials", session_credentials(region).to_wire(), timeout=10)
            result = client.call(
                "provision",
                provision_params(
                    ciphertext, key_id=key_id, region=region, proxy_port=proxy_port, endpoint_url=None
                ),
                timeout=60,
            )
        return dict(result) if isinstance(result, Mapping) else {"result": result}

    return run(lifecycle)


def _lifecycle_for(flag: str, read_only: bool) -> Any:
    from core.backend import select_backend
    from core.lifecycle import Lifecycle

    return Lifecycle(select_backend(flag), read_only=read_only)
