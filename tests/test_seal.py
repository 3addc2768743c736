"""Sealing and release on the emulator: `kms seal` pins a key policy to the payload EIF's PCRs, the
enclave gets the key back through forwarder -> vsock-proxy -> local KMS with its attestation
document, and test-sign shows the sealed key. Refusals: debug mode, PCR mismatch, expired credentials.

One module-wide world (home, payload EIF, local KMS, proxy, one enclave) keeps this fast.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from console.cli import main as cli_main
from core.backends.registry import select_backend
from core.channel.protocol import BlockingClient, RemoteError
from core.channel.proxy import AllowEntry, VsockProxy
from core.errors import ConfigError
from core.kms.client import AwsCredentials, KmsError
from core.kms.policy import key_policy
from core.models import LaunchRequest
from core.ops.lifecycle import Lifecycle
from core.ops.provision import seal
from core.ops.testsign import test_sign as run_test_sign
from emulator.kms import LocalKms
from enclave_app.packaging import payload_request
from tests.conftest import REPO, scratch_dir

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIATESTING000000000",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class World:
    home: Path
    lifecycle: Lifecycle
    kms: LocalKms
    eif: Path
    pcrs: dict[int, str]
    enclave_id: str
    cid: int

    def env(self) -> dict[str, str]:
        return {**os.environ, **AWS_ENV, "NITRODECK_HOME": str(self.home), "NITRODECK_BACKEND": "emulator"}

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "console", *argv],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=90,
        )

    def kms_client(self) -> Any:
        return boto3.client("kms", endpoint_url=self.kms.endpoint_url, region_name="us-east-1", **_creds())

    def call(self, cid: int, method: str, params: dict[str, Any], timeout: float = 60) -> Any:
        sock = self.lifecycle.backend.transport().connect(cid, 5005, timeout=10)
        with BlockingClient(sock) as client:
            return client.call(method, params, timeout=timeout)

    def launch(self, debug: bool = False) -> tuple[str, int]:
        info = self.lifecycle.launch(
            LaunchRequest(eif_path=str(self.eif), memory_mib=128, cpu_count=2, debug_mode=debug)
        )
        _wait_ready(self, info.cid)
        return info.enclave_id, info.cid


def _creds() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    }


def _wait_ready(world: World, cid: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            world.call(cid, "health", {}, timeout=5)
            return
        except (OSError, RemoteError, Exception):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _wire_credentials(expires_in: float | None = None) -> dict[str, Any]:
    exp = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in) if expires_in is not None else None
    return AwsCredentials(
        AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"], "token", exp, "us-east-1"
    ).to_wire()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    saved = {k: os.environ.get(k) for k in ("NITRODECK_HOME", "NITRODECK_BACKEND", "PATH", *AWS_ENV)}
    os.environ.update(AWS_ENV)
    try:
        with scratch_dir("nds-", world=True) as root:
            os.environ["NITRODECK_HOME"] = str(root)
            os.environ["NITRODECK_BACKEND"] = "emulator"
            # the emulated enclave runs `python3` from PATH: make it this interpreter's environment
            os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
            # room for two enclaves of two CPUs each (the regular one and a debug-mode one)
            etc = root / "emulator" / "etc"
            etc.mkdir(parents=True)
            (etc / "allocator.yaml").write_text("---\nmemory_mib: 1024\ncpu_count: 4\n")
            (root / "emulator" / "instance.yaml").write_text(
                "instance_id: i-0123456789abcdef0\nvcpus: 8\ncores: 4\nthreads_per_core: 2\nhugepage_sizes_kb: [2048]\n"
            )
            kms = LocalKms().start()
            proxy = None
            try:
                lifecycle = Lifecycle(select_backend())
                eif = root / "payload.eif"
                result = lifecycle.build(payload_request(str(eif)))
                proxy = VsockProxy(
                    8000,
                    "127.0.0.1",
                    kms.port,
                    transport=lifecycle.backend.transport(),
                    allowlist=[AllowEntry("127.0.0.1", kms.port)],
                ).start()
                world = World(root, lifecycle, kms, eif, result.measurements.pcrs(), "", 0)
                world.enclave_id, world.cid = world.launch()
                yield world
            finally:
                if proxy is not None:
                    proxy.stop()
                kms.stop()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_seal_provision_and_test_sign(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = world.kms_client()
    arn = client.create_key()["KeyMetadata"]["Arn"]
    wallet = ec.generate_private_key(ec.SECP256K1())
    scalar = wallet.private_numbers().private_value.to_bytes(32, "big")
    key_file = tmp_path / "wallet.hex"
    key_file.write_text(scalar.hex() + "\n")
    out = tmp_path / "wallet.kms"
    # without --apply the policy is only shown (in-process: each CLI start costs seconds on a busy box)
    shown = seal(
        key_id=arn,
        eif=world.eif,
        generate=None,
        in_file=key_file,
        apply=False,
        endpoint_url=world.kms.endpoint_url,
        region="us-east-1",
        principal=None,
        out=out,
    )
    assert (
        not shown.applied
        and world.pcrs[0] in shown.policy_json
        and "RecipientAttestation:ImageSha384" in shown.policy_json
    )
    assert "kms:RecipientAttestation" not in client.get_key_policy(KeyId=arn, PolicyName="default")["Policy"]
    # ... and nothing is sealed under a key whose policy is not pinned yet
    assert not out.exists() and shown.ciphertext_file is None and shown.public_key_hex is None
    seal_args = ["kms", "seal", "--key-id", arn, "--eif", str(world.eif), "--in", str(key_file)]
    seal_args += ["--endpoint-url", world.kms.endpoint_url, "--apply"]
    res = world.cli(*seal_args, "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["PolicyApplied"] is True
    applied = json.loads(client.get_key_policy(KeyId=arn, PolicyName="default")["Policy"])
    assert applied == report["Policy"]
    # the plaintext key went nowhere but KMS
    for text in (res.stdout, res.stderr):
        assert scalar.hex() not in text
    sealed = out.read_bytes()
    assert scalar not in sealed and scalar.hex().encode() not in sealed
    assert (out.stat().st_mode & 0o777) == 0o600
    spki = wallet.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert report["WalletPublicKeyDer"] == spki.hex()
    # the human output names the key in the form test-sign shows, so the operator can compare
    # (in-process: the world's environment is this process's)
    status = cli_main([*seal_args, "--out", str(tmp_path / "again.kms")])
    human = capsys.readouterr().err
    assert status == 0, human
    assert "ciphertext written" in human and f"as test-sign shows it): {spki.hex()}" in human

    res = world.cli("provision", world.enclave_id, "--ciphertext", str(out), "--key-id", arn, "--credentials")
    assert res.returncode == 0, res.stderr
    assert scalar.hex() not in res.stdout + res.stderr
    assert res.stdout.strip() == f"provisioned: signing key {spki.hex()}"
    sign = run_test_sign(world.lifecycle, world.enclave_id, b"pay the invoice")
    assert sign.ok, [c for c in sign.checks if not c.ok]
    assert sign.public_key == spki.hex()
    assert world.call(world.cid, "health", {})["key_source"] == "kms"
    decisions = world.kms.layer.decisions if world.kms.layer else []
    assert ("Decrypt", True) in [(a, ok) for a, ok, _ in decisions]


def test_generate_random_and_data_key_inside(world: World) -> None:
    world.call(world.cid, "set_credentials", _wire_credentials())
    rnd = world.call(world.cid, "kms_generate_random", {"length": 64})
    assert len(rnd["random"]) == 64
    arn = world.kms_client().create_key()["KeyMetadata"]["Arn"]
    world.kms_client().put_key_policy(
        KeyId=arn, PolicyName="default", Policy=json.dumps(key_policy(world.pcrs, "123456789012"))
    )
    dk = world.call(world.cid, "kms_generate_data_key", {"key_id": arn})
    assert dk["plaintext_length"] == 32 and "plaintext" not in dk
    # the parent holds a normal ciphertext of that key, but the pinned policy releases it to no one else
    with pytest.raises(botocore.exceptions.ClientError) as info:
        world.kms_client().decrypt(CiphertextBlob=dk["ciphertext_blob"])
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"


def test_pcr_mismatch_is_refused(world: World) -> None:
    client = world.kms_client()
    arn = client.create_key()["KeyMetadata"]["Arn"]
    pinned = {**world.pcrs, 2: "ab" * 48}  # another image's PCR2
    client.put_key_policy(
        KeyId=arn, PolicyName="default", Policy=json.dumps(key_policy(pinned, "123456789012"))
    )
    blob = client.encrypt(KeyId=arn, Plaintext=b"\x07" * 32)["CiphertextBlob"]
    world.call(world.cid, "set_credentials", _wire_credentials())
    with pytest.raises(RemoteError) as info:
        world.call(world.cid, "provision", {"ciphertext": blob, "key_id": arn})
    assert "AccessDeniedException" in info.value.remote_message
    assert "measurements do not match" in info.value.remote_message


def test_debug_mode_enclave_is_refused(world: World) -> None:
    client = world.kms_client()
    arn = client.create_key()["KeyMetadata"]["Arn"]
    client.put_key_policy(
        KeyId=arn, PolicyName="default", Policy=json.dumps(key_policy(world.pcrs, "123456789012"))
    )
    blob = client.encrypt(KeyId=arn, Plaintext=b"\x08" * 32)["CiphertextBlob"]
    enclave_id, cid = world.launch(debug=True)
    try:
        with pytest.raises(RemoteError, match="has not called set_credentials"):
            world.call(cid, "provision", {"ciphertext": blob, "key_id": arn})
        world.call(cid, "set_credentials", _wire_credentials())
        with pytest.raises(RemoteError) as info:
            world.call(cid, "provision", {"ciphertext": blob, "key_id": arn})
        assert "debug mode" in info.value.remote_message
        assert world.call(cid, "health", {})["key_source"] == "generated"
    finally:
        world.lifecycle.terminate(enclave_id)


def test_expired_credentials_are_refused(world: World) -> None:
    with pytest.raises(RemoteError) as info:
        world.call(world.cid, "set_credentials", _wire_credentials(expires_in=-5))
    assert "already expired" in info.value.remote_message
    world.call(world.cid, "set_credentials", _wire_credentials(expires_in=1.0))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            world.call(world.cid, "provision", {"ciphertext": b"\x01" * 64})
        except RemoteError as exc:
            if "expired" in exc.remote_message:
                assert "refused" in exc.remote_message
                return
        time.sleep(0.3)
    pytest.fail("expired credentials were never refused")


def test_read_only_refuses_seal(world: World, tmp_path: Path) -> None:
    res = world.cli(
        "--read-only",
        "kms",
        "seal",
        "--key-id",
        "alias/x",
        "--eif",
        str(world.eif),
        "--endpoint-url",
        world.kms.endpoint_url,
        "--out",
        str(tmp_path / "x"),
    )
    assert res.returncode == 13 and "read-only" in res.stderr
    assert not (tmp_path / "x").exists()


def test_seal_errors_are_typed(world: World, tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"not a key at all")
    arn = world.kms_client().create_key()["KeyMetadata"]["Arn"]
    res = world.cli(
        "kms",
        "seal",
        "--key-id",
        arn,
        "--eif",
        str(world.eif),
        "--in",
        str(bad),
        "--endpoint-url",
        world.kms.endpoint_url,
    )
    assert res.returncode == 1 and "usable private key" in res.stderr and "Traceback" not in res.stderr
    with pytest.raises(KmsError, match="NotFoundException"):
        seal(
            key_id="no-such-key",
            eif=world.eif,
            generate=None,
            in_file=None,
            apply=False,
            endpoint_url=world.kms.endpoint_url,
            region="us-east-1",
            principal=None,
            out=tmp_path / "y",
        )
    with pytest.raises(ConfigError, match="no EIF"):
        seal(
            key_id=arn,
            eif=tmp_path / "none.eif",
            generate=None,
            in_file=None,
            apply=False,
            endpoint_url=world.kms.endpoint_url,
            region="us-east-1",
            principal=None,
            out=tmp_path / "y",
        )
    assert not (tmp_path / "y").exists()


def test_image_pinned_key_arn_refuses_other_keys(world: World) -> None:
    """A parent with credentials for another key (open policy) cannot plant a key it knows."""
    client = world.kms_client()
    trusted = client.create_key()["KeyMetadata"]["Arn"]
    planted = client.create_key()["KeyMetadata"]["Arn"]
    req = payload_request(str(world.home / "pinned.eif"))
    req.env = [*req.env, f"NITRODECK_KMS_KEY_ARNS={trusted}"]
    pcrs = world.lifecycle.build(req).measurements.pcrs()
    assert pcrs != world.pcrs  # the pin is part of the measured image
    for arn in (trusted, planted):
        client.put_key_policy(
            KeyId=arn, PolicyName="default", Policy=json.dumps(key_policy(pcrs, "123456789012"))
        )
    info = world.lifecycle.launch(LaunchRequest(eif_path=req.output_file, memory_mib=128, cpu_count=2))
    try:
        _wait_ready(world, info.cid)
        world.call(info.cid, "set_credentials", _wire_credentials())
        bad = client.encrypt(KeyId=planted, Plaintext=b"\x0a" * 32)["CiphertextBlob"]
        with pytest.raises(RemoteError, match="does not trust"):
            world.call(info.cid, "provision", {"ciphertext": bad})
        assert world.call(info.cid, "health", {})["key_source"] == "generated"
        good = client.encrypt(KeyId=trusted, Plaintext=b"\x0b" * 32)["CiphertextBlob"]
        assert world.call(info.cid, "provision", {"ciphertext": good})["key_id"] == trusted
    finally:
        world.lifecycle.terminate(info.enclave_id)
