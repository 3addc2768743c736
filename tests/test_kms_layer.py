"""emulator/kms.py: the local KMS (real moto + the Recipient layer over HTTP on 127.0.0.1).

Attestation documents come from the emulator's real NSM (emulator/nsm.py) signed under this home's
emulator root; the layer verifies them with core.attest.verify exactly as it does for an enclave.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import cbor2
import pytest
from botocore.config import Config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from core import home
from core.crypto import cms
from core.kms import key_policy
from emulator.kms import LocalKms, evaluate_policy, read_endpoint_file
from emulator.nsm import EmulatedNsm
from emulator.pki import EmulatorPki

PCRS = {0: bytes([1]) * 48, 1: bytes([2]) * 48, 2: bytes([3]) * 48}
HEX = {i: v.hex() for i, v in PCRS.items()}
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_SPKI = _RSA.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)


@dataclass
class World:
    kms: LocalKms
    pki: EmulatorPki

    def client(self) -> Any:
        return boto3.client(
            "kms",
            endpoint_url=self.kms.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 1}),
        )

    def document(
        self, *, debug: bool = False, pcrs: dict[int, bytes] | None = None, spki: bytes = _SPKI
    ) -> bytes:
        nsm = EmulatedNsm(
            "i-0123456789abcdef0-enc0123456789abcd",
            pcrs or PCRS,
            debug,
            "i-0123456789abcdef0",
            None,
            self.pki,
        )
        answer = cbor2.loads(
            nsm.handle(cbor2.dumps({"Attestation": {"user_data": None, "nonce": None, "public_key": spki}}))
        )
        return bytes(answer["Attestation"]["document"])

    def sealed_key(self, plaintext: bytes, pinned: dict[int, str] | None = None) -> tuple[str, bytes]:
        client = self.client()
        arn = client.create_key()["KeyMetadata"]["Arn"]
        policy = key_policy(pinned or HEX, "123456789012")
        client.put_key_policy(KeyId=arn, PolicyName="default", Policy=json.dumps(policy))
        return arn, client.encrypt(KeyId=arn, Plaintext=plaintext)["CiphertextBlob"]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    saved = os.environ.get(home.ENV_HOME)
    tmp = tempfile.mkdtemp(prefix="ndk-", dir="/tmp")
    os.environ[home.ENV_HOME] = tmp
    kms = LocalKms().start()
    try:
        yield World(kms, EmulatorPki.load_or_create(home.emulator_etc()))
    finally:
        kms.stop()
        if saved is None:
            os.environ.pop(home.ENV_HOME, None)
        else:
            os.environ[home.ENV_HOME] = saved
        shutil.rmtree(tmp, ignore_errors=True)


def _recipient(doc: bytes) -> dict[str, Any]:
    return {"AttestationDocument": doc, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}


def test_decrypt_with_recipient_releases_only_to_the_attested_key(world: World) -> None:
    arn, blob = world.sealed_key(b"w" * 32)
    out = world.client().decrypt(CiphertextBlob=blob, Recipient=_recipient(world.document()))
    assert not out.get("Plaintext")
    assert out["KeyId"] == arn
    assert cms.decrypt(out["CiphertextForRecipient"], _RSA) == b"w" * 32
    assert world.kms.layer is not None and world.kms.layer.decisions[-1][1] is True


def test_pass_through_without_recipient(world: World) -> None:
    _arn, blob = world.sealed_key(b"plain")
    out = world.client().decrypt(CiphertextBlob=blob)
    assert out["Plaintext"] == b"plain" and "CiphertextForRecipient" not in out


def test_pcr_mismatch_is_access_denied(world: World) -> None:
    other = dict(HEX)
    other[2] = "ab" * 48
    _arn, blob = world.sealed_key(b"x" * 32, pinned=other)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        world.client().decrypt(CiphertextBlob=blob, Recipient=_recipient(world.document()))
    err = info.value.response["Error"]
    assert err["Code"] == "AccessDeniedException"
    assert "measurements do not match" in err["Message"]


def test_debug_mode_enclave_is_refused(world: World) -> None:
    _arn, blob = world.sealed_key(b"y" * 32)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        world.client().decrypt(CiphertextBlob=blob, Recipient=_recipient(world.document(debug=True)))
    err = info.value.response["Error"]
    assert err["Code"] == "AccessDeniedException" and "debug mode" in err["Message"]


def test_forged_document_is_refused(world: World) -> None:
    _arn, blob = world.sealed_key(b"z" * 32)
    doc = bytearray(world.document())
    doc[-10] ^= 0xFF  # break the signature
    with pytest.raises(botocore.exceptions.ClientError) as info:
        world.client().decrypt(CiphertextBlob=blob, Recipient=_recipient(bytes(doc)))
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "attestation document" in info.value.response["Error"]["Message"]


def test_non_rsa_public_key_is_refused(world: World) -> None:
    _arn, blob = world.sealed_key(b"z" * 32)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        world.client().decrypt(
            CiphertextBlob=blob, Recipient=_recipient(world.document(spki=b"\x30\x03\x02\x01\x01"))
        )
    assert "SubjectPublicKeyInfo" in info.value.response["Error"]["Message"]


def test_generate_random_and_data_key(world: World) -> None:
    client = world.client()
    doc = world.document()
    rnd = client.generate_random(NumberOfBytes=48, Recipient=_recipient(doc))
    assert not rnd.get("Plaintext") and len(cms.decrypt(rnd["CiphertextForRecipient"], _RSA)) == 48
    arn, _ = world.sealed_key(b"k")
    dk = client.generate_data_key(KeyId=arn, KeySpec="AES_256", Recipient=_recipient(doc))
    assert not dk.get("Plaintext")
    data_key = cms.decrypt(dk["CiphertextForRecipient"], _RSA)
    assert len(data_key) == 32
    # the CiphertextBlob is a normal KMS ciphertext of that same key
    assert client.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == data_key


def test_endpoint_file(world: World, tmp_path: Path) -> None:
    target = tmp_path / "kms.json"
    world.kms.write_endpoint_file(target)
    assert read_endpoint_file(target) == world.kms.endpoint_url
    target.write_text('{"endpoint_url": "http://10.0.0.1:1"}')
    assert read_endpoint_file(target) is None  # only loopback endpoints are trusted


def test_policy_evaluation_rules() -> None:
    policy = key_policy(HEX, "123456789012")
    assert evaluate_policy(policy, "Decrypt", HEX)[0] is True
    assert evaluate_policy(policy, "Decrypt", {**HEX, 1: "00" * 48})[0] is False
    assert evaluate_policy(policy, "Decrypt", {1: HEX[1], 2: HEX[2]})[0] is False  # PCR0 absent
    # the policy author pasted upper-case hex; documents carry lower-case
    upper = json.loads(
        json.dumps(key_policy({**HEX, 0: "ab" * 48}, "123456789012")).replace("ab" * 48, "AB" * 48)
    )
    assert evaluate_policy(upper, "Decrypt", {**HEX, 0: "ab" * 48})[0] is True  # IgnoreCase
    strict = json.loads(json.dumps(upper).replace("StringEqualsIgnoreCase", "StringEquals"))
    assert evaluate_policy(strict, "Decrypt", {**HEX, 0: "ab" * 48})[0] is False
    deny = {
        "Statement": [
            *policy["Statement"],
            {
                "Effect": "Deny",
                "Action": "kms:*",
                "Condition": {"StringNotEquals": {"kms:RecipientAttestation:PCR8": "aa"}},
            },
        ]
    }
    assert evaluate_policy(deny, "Decrypt", HEX)[0] is False
    assert evaluate_policy({"Statement": []}, "Decrypt", HEX) == (
        False,
        "no key policy statement allows kms:Decrypt",
    )


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "Statement",
                    "Effect",
                    "Action",
                    "Condition",
                    "Allow",
                    "StringEquals",
                    "kms:RecipientAttestation:PCR0",
                ]
            ),
            kids,
            max_size=3,
        )
    ),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["Statement", "Version"]), _json, max_size=2))
def test_fuzz_policy_evaluation_never_crashes(policy: dict[str, Any]) -> None:
    allowed, reason = evaluate_policy(policy, "Decrypt", HEX)
    assert isinstance(allowed, bool) and reason


def test_oversized_request_is_refused(world: World) -> None:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        world.kms.endpoint_url + "/",
        data=b"{" + b" " * (1024 * 1024 + 10) + b"}",
        headers={"X-Amz-Target": "TrentService.Decrypt", "Content-Type": "application/x-amz-json-1.1"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 413
    assert b"ValidationException" in info.value.read()


def test_b64_document_garbage(world: World) -> None:
    import urllib.request

    body = json.dumps(
        {
            "CiphertextBlob": base64.b64encode(b"x").decode(),
            "Recipient": {"AttestationDocument": "%%%", "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"},
        }
    )
    req = urllib.request.Request(
        world.kms.endpoint_url + "/",
        data=body.encode(),
        headers={"X-Amz-Target": "TrentService.Decrypt"},
        method="POST",
    )
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert b"not base64" in info.value.read()


def test_allow_in_proxy_config_keeps_existing_entries(tmp_path: Path) -> None:
    from core.channel.proxy import AllowEntry, load_allowlist
    from emulator.kms import allow_in_proxy_config

    cfg = tmp_path / "vsock-proxy.yaml"
    cfg.write_text("# operator's list\nallowlist:\n- {address: kms.eu-west-1.amazonaws.com, port: 443}")
    allow_in_proxy_config(4566, cfg)
    allow_in_proxy_config(4566, cfg)  # idempotent
    assert load_allowlist(cfg) == [AllowEntry("kms.eu-west-1.amazonaws.com", 443), AllowEntry("127.0.0.1", 4566)]
    assert cfg.read_text().startswith("# operator's list")
    fresh = tmp_path / "new" / "vsock-proxy.yaml"
    allow_in_proxy_config(9000, fresh)
    assert AllowEntry("127.0.0.1", 9000) in load_allowlist(fresh)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["Decrypt", "GenerateDataKey", "GenerateRandom", "Encrypt", ""]),
    st.dictionaries(
        st.sampled_from(["AttestationDocument", "KeyEncryptionAlgorithm", "x"]),
        st.none() | st.integers() | st.text(max_size=30) | st.just("RSAES_OAEP_SHA_256") | st.just("AAAA"),
        max_size=3,
    )
    | st.integers()
    | st.text(max_size=10),
)
def test_fuzz_recipient_requests_only_kms_errors(action: str, recipient: Any) -> None:
    """Whatever arrives as Recipient, the layer answers with a KMS error and reaches no key."""
    from emulator.kms import KmsLayerError, RecipientLayer

    layer = RecipientLayer("http://127.0.0.1:9")  # nothing listens: a call to moto would fail loudly
    with pytest.raises(KmsLayerError) as info:
        layer.with_recipient(action, {"CiphertextBlob": "AA==", "Recipient": recipient}, {})
    assert info.value.kms_type in (
        "ValidationException",
        "UnsupportedOperationException",
        "KMSInternalException",
    )
    assert not layer.decisions


def test_store_down_is_a_kms_error() -> None:
    """With moto gone, both pass-through and Recipient calls answer KMSInternalException."""
    from emulator.kms import KmsLayerError, RecipientLayer

    layer = RecipientLayer("http://127.0.0.1:9")
    status, _headers, body = layer.forward(b"{}", {"X-Amz-Target": "TrentService.ListKeys"})
    assert status == 500 and json.loads(body)["__type"] == "KMSInternalException"
    with pytest.raises(KmsLayerError) as info:
        layer._moto("GetKeyPolicy", {"KeyId": "k"}, {})
    assert info.value.kms_type == "KMSInternalException" and "down" in info.value.message
