"""Sealing a wallet key under a PCR-pinned key policy (`nitrodeck kms seal`) and provisioning it into
an enclave (`nitrodeck provision`). Both are mutating lifecycle operations: read-only refuses them and
the audit log records them.

The wallet key's plaintext exists on the parent only for the moment of ``kms:Encrypt`` during
sealing (generated in memory, or read once from the operator's file); it is never written, printed
or logged. After sealing only the enclave can get it back, through KMS with its attestation document.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from core.errors import ConfigError
from core.files import write_atomic
from core.kms.client import (
    DEFAULT_PROXY_PORT,
    MAX_CIPHERTEXT,
    MAX_KEY_FILE,
    KmsError,
    kms_call,
    kms_client,
    session_credentials,
)
from core.kms.policy import account_of, key_policy
from core.kms.wallet import load_wallet_key, raw_scalar, wallet_public_hex, wallet_spki

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
    """All or nothing, 0600, and never over something that is not a regular file (core.files)."""
    try:
        write_atomic(path, data, mode=0o600, where="--out", lock=True)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}", where="--out") from None


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
    from core.eif.measure import measure_eif

    if generate not in (None, "secp256k1"):
        raise ConfigError(f"cannot generate {generate!r} keys", where="--generate", hint="use secp256k1")
    if not eif.is_file():
        raise ConfigError(f"no EIF at {eif}", where="--eif")
    pcrs = measure_eif(eif).pcrs()
    if endpoint_url is None:
        from core.backends.registry import select_backend

        endpoint_url = select_backend().kms_endpoint()
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
    from core.ops.lifecycle import mutating, note_command

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
    from core.channel.protocol import BlockingClient
    from core.ops.lifecycle import Lifecycle, mutating, note_command

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
    from core.backends.registry import select_backend
    from core.ops.lifecycle import Lifecycle

    return Lifecycle(select_backend(flag), read_only=read_only)
