"""Talking to KMS from the parent: credentials handed to the enclave, the boto3 client and its errors.

The wallet key's plaintext exists on the parent only for the moment of ``kms:Encrypt`` during
sealing (core.ops.provision); it is never written, printed or logged here.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import NitrodeckError

RECIPIENT_ACTIONS = ("Decrypt", "GenerateDataKey", "GenerateRandom")
KEY_ENCRYPTION_ALGORITHM = "RSAES_OAEP_SHA_256"
DEFAULT_REGION = "us-east-1"
DEFAULT_PROXY_PORT = 8000
MAX_CIPHERTEXT = 6144  # KMS ciphertext blobs for a 4 KiB plaintext stay well under this
MAX_KEY_FILE = 16 * 1024
_MAX_FIELD = 4096

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
