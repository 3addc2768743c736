"""`nitrodeck kms local-server` as a process: endpoint file, pass-through, and `kms seal` finding it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from core.channel.proxy import check_allowlist, default_config, load_allowlist
from core.eif.measure import measure_eif
from core.kms.client import KmsError
from core.kms.wallet import load_wallet_key, raw_scalar
from core.ops.provision import seal
from enclave_app.packaging import payload_request
from tests.conftest import REPO, wait_for

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def test_local_server_process_and_default_seal_endpoint(
    nd_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    proc = subprocess.Popen(
        [sys.executable, "-m", "console", "kms", "local-server"],
        cwd=REPO,
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        endpoint_file = nd_home / "emulator" / "kms.json"
        wait_for(endpoint_file.exists, timeout=60)
        info = json.loads(endpoint_file.read_text())
        assert info["endpoint_url"].startswith("http://127.0.0.1:") and info["pid"] == proc.pid
        # the emulator's default vsock-proxy.yaml now allows the local KMS
        port = int(info["endpoint_url"].rsplit(":", 1)[1])
        wait_for(lambda: (nd_home / "emulator" / "etc" / "vsock-proxy.yaml").exists(), timeout=30)
        check_allowlist("127.0.0.1", port, load_allowlist(default_config(emulated=True)))
        client = boto3.client("kms", endpoint_url=info["endpoint_url"])
        arn = client.create_key()["KeyMetadata"]["Arn"]
        assert (
            client.decrypt(CiphertextBlob=client.encrypt(KeyId=arn, Plaintext=b"p")["CiphertextBlob"])[
                "Plaintext"
            ]
            == b"p"
        )

        eif = nd_home / "p.eif"
        from core.backends.registry import select_backend
        from core.ops.lifecycle import Lifecycle

        Lifecycle(select_backend()).build(payload_request(str(eif)))
        # no --endpoint-url: under the emulator, seal uses the running local KMS
        report = seal(
            key_id=arn,
            eif=eif,
            generate="secp256k1",
            in_file=None,
            apply=True,
            endpoint_url=None,
            region=None,
            principal=None,
            out=None,
        )
        assert report.applied and Path(report.ciphertext_file) == nd_home / "p.eif.wallet.kms"
        audit = [json.loads(line) for line in (nd_home / "audit.log").read_text().splitlines()]
        assert any("kms-seal" in json.dumps(entry) and "--apply" in json.dumps(entry) for entry in audit)
        pinned = json.loads(client.get_key_policy(KeyId=arn, PolicyName="default")["Policy"])
        cond = pinned["Statement"][1]["Condition"]["StringEqualsIgnoreCase"]
        assert cond["kms:RecipientAttestation:ImageSha384"] == measure_eif(eif).pcr0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        # the entry it added is withdrawn when it stops (it used to grow by one port per start)
        assert all(e.port != port for e in load_allowlist(default_config(emulated=True)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | st.text(alphabet="0123456789abcdefx \n", min_size=60, max_size=70).map(str.encode)
)
def test_fuzz_wallet_key_loader(data: bytes) -> None:
    """Key files: a secp256k1 key or a KmsError that never quotes the input."""
    try:
        key = load_wallet_key(data, "--in")
    except KmsError as exc:
        if len(data) >= 8:  # shorter strings occur in any English sentence
            assert data.hex() not in str(exc) and data.decode("latin-1") not in str(exc)
        return
    assert isinstance(key.curve, ec.SECP256K1)


def test_wallet_key_forms() -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    raw = raw_scalar(key)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    for form in (raw, raw.hex().encode() + b"\n", b"0x" + raw.hex().encode(), pem, der):
        assert raw_scalar(load_wallet_key(form, "--in")) == raw
    p256 = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KmsError, match="secp256k1"):
        load_wallet_key(p256, "--in")
    with pytest.raises(KmsError):
        load_wallet_key(b"\x00" * 32, "--in")  # scalar 0 is not a key
