"""emulator/kms.py: the local KMS (real moto + the Recipient layer over HTTP on 127.0.0.1).

Attestation documents come from the emulator's real NSM (emulator/nsm.py) signed under this home's
emulator root; the layer verifies them with core.attest.verify exactly as it does for an enclave.
"""

from __future__ import annotations

import base64
import json
import os
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
from core.kms.policy import key_policy
from emulator.kms import LocalKms, evaluate_policy, read_endpoint_file
from emulator.nsm import EmulatedNsm
from emulator.pki import EmulatorPki
from tests.conftest import scratch_dir

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
    with scratch_dir("ndk-") as tmp:
        os.environ[home.ENV_HOME] = str(tmp)
        try:
            kms = LocalKms().start()
            try:
                yield World(kms, EmulatorPki.load_or_create(home.emulator_etc()))
            finally:
                kms.stop()
        finally:
            if saved is None:
                os.environ.pop(home.ENV_HOME, None)
            else:
                os.environ[home.ENV_HOME] = saved


def _recipient(doc: bytes) -> dict[str, Any]:
    return {"AttestationDocument": doc, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}


def test_decrypt_with_recipient_releases_only_to_the_attested_key(world: World) -> None:
    arn, blob = world.sealed_key(b"w" * 32)
    out = world.client().decrypt(CiphertextBlob=blob, Recipient=_recipient(world.document()))
    assert not out.get("Plaintext")
    assert out["KeyId"] == arn
    assert cms.decrypt(out["CiphertextForRecipient"], _RSA) == b"w" * 32
    assert world.kms.layer is not None and world.kms.layer.decisions[-1][1] is True


def test_plain_requests_pass_when_the_key_policy_allows_them(world: World) -> None:
    client = world.client()
    arn = client.create_key()["KeyMetadata"]["Arn"]  # moto's default policy: the account may do kms:*
    blob = client.encrypt(KeyId=arn, Plaintext=b"plain")["CiphertextBlob"]
    out = client.decrypt(CiphertextBlob=blob)
    assert out["Plaintext"] == b"plain" and "CiphertextForRecipient" not in out


def _denied(call: Any, **kwargs: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call(**kwargs)
    err = info.value.response["Error"]
    assert err["Code"] == "AccessDeniedException", err
    return str(err["Message"])


def test_no_plaintext_without_recipient_when_the_policy_requires_attestation(world: World) -> None:
    """Issue 9 item 3: Decrypt / GenerateDataKey without Recipient went straight to moto."""
    arn, blob = world.sealed_key(b"s" * 32)
    client = world.client()
    message = _denied(client.decrypt, CiphertextBlob=blob)
    assert "kms:Decrypt" in message and "no Recipient" in message
    _denied(client.decrypt, CiphertextBlob=blob, KeyId=arn)
    _denied(client.generate_data_key, KeyId=arn, KeySpec="AES_256")
    _denied(client.generate_data_key_without_plaintext, KeyId=arn, KeySpec="AES_256")
    # the administrative statement still works
    assert client.describe_key(KeyId=arn)["KeyMetadata"]["Arn"] == arn
    assert world.kms.layer is not None and world.kms.layer.decisions[-1][1] is True


def _with_statement(world: World, statement: dict[str, Any]) -> tuple[str, bytes]:
    client = world.client()
    arn = client.create_key()["KeyMetadata"]["Arn"]
    blob = client.encrypt(KeyId=arn, Plaintext=b"d" * 32)["CiphertextBlob"]
    policy = key_policy(HEX, "123456789012")
    policy["Statement"].append(statement)
    client.put_key_policy(KeyId=arn, PolicyName="default", Policy=json.dumps(policy))
    return arn, blob


@pytest.mark.parametrize(
    "statement",
    [
        # a key the request lacks makes a negated operator hold, as on AWS
        {"Condition": {"StringNotLike": {"kms:EncryptionContext:purpose": "ab*"}}},
        {"Condition": {"StringNotLike": {"kms:RecipientAttestation:PCR8": "ab*"}}},
        {"Condition": {"StringNotEqualsIfExists": {"kms:RecipientAttestation:ImageSha384": "00" * 48}}},
        {"Condition": {"StringEqualsIfExists": {"kms:EncryptionContext:purpose": "ab"}}},
        {"Condition": {"Null": {"kms:EncryptionContext:purpose": "true"}}},
        {"Condition": {"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["purpose"]}}},
        {"Condition": {"NumericLessThan": {"aws:EpochTime": "99999999999"}}},
        {"Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}},
        {"Condition": {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::123456789012:*"}}},
        {"NotAction": ["kms:Encrypt", "kms:PutKeyPolicy"]},
        {"NotResource": "arn:aws:kms:*:*:key/not-this-one"},
        {"NotPrincipal": {"AWS": "arn:aws:iam::999999999999:root"}},
    ],
)
def test_an_applicable_deny_wins_over_the_attested_allow(world: World, statement: dict[str, Any]) -> None:
    full: dict[str, Any] = {"Sid": "deny", "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*"}
    for twin in (("NotAction", "Action"), ("NotResource", "Resource"), ("NotPrincipal", "Principal")):
        if twin[0] in statement:
            full.pop(twin[1])
    full.update(statement)
    _arn, blob = _with_statement(world, full)
    message = _denied(world.client().decrypt, CiphertextBlob=blob, Recipient=_recipient(world.document()))
    assert "denied by 'deny'" in message


@pytest.mark.parametrize(
    "statement",
    [
        {"Condition": {"StringLike": {"kms:EncryptionContext:purpose": "ab*"}}},  # absent: false
        {"Condition": {"StringNotEquals": {"kms:RecipientAttestation:ImageSha384": HEX[0]}}},
        {"Condition": {"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": ["purpose"]}}},
        {"Condition": {"NotIpAddress": {"aws:SourceIp": "127.0.0.0/8"}}},
        {"Condition": {"Bool": {"kms:MultiRegion": "true"}}},
        {"Condition": {"Null": {"kms:RecipientAttestation:PCR0": "true"}}},
        {"Action": "kms:Encrypt"},
        {"Resource": "arn:aws:kms:*:*:key/not-this-one"},
        {"Principal": {"AWS": "arn:aws:iam::999999999999:root"}},
        {"Principal": {"Service": "ec2.amazonaws.com"}},
    ],
)
def test_a_deny_that_does_not_apply_leaves_the_allow(world: World, statement: dict[str, Any]) -> None:
    full: dict[str, Any] = {"Sid": "deny", "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*"}
    full.update(statement)
    _arn, blob = _with_statement(world, full)
    out = world.client().decrypt(CiphertextBlob=blob, Recipient=_recipient(world.document()))
    assert cms.decrypt(out["CiphertextForRecipient"], _RSA) == b"d" * 32


@pytest.mark.parametrize(
    "condition",
    [
        {"StringMatchesRegex": {"kms:RecipientAttestation:PCR0": ".*"}},
        {"ForSomeValues:StringEquals": {"kms:EncryptionContextKeys": "a"}},
        {"NullIfExists": {"kms:RecipientAttestation:PCR0": "true"}},
        {"NumericLessThan": {"aws:EpochTime": "soon"}},
        {"IpAddress": {"aws:SourceIp": "not-a-network"}},
        {"StringEquals": {"aws:PrincipalArn": "${aws:username}"}},
        {"StringEquals": {"kms:RecipientAttestation:PCR0": {"nested": 1}}},
    ],
)
def test_what_cannot_be_evaluated_is_denied_with_a_reason(world: World, condition: dict[str, Any]) -> None:
    # even in a Deny statement for another action: the policy as a whole cannot be judged
    statement = {"Sid": "odd", "Effect": "Deny", "Principal": "*", "Action": "kms:Sign", "Resource": "*"}
    statement["Condition"] = condition
    _arn, blob = _with_statement(world, statement)
    message = _denied(world.client().decrypt, CiphertextBlob=blob, Recipient=_recipient(world.document()))
    assert "cannot be evaluated" in message


def test_alias_and_reencrypt_are_judged_on_every_key(world: World) -> None:
    client = world.client()
    sealed, blob = world.sealed_key(b"r" * 32)
    open_key = client.create_key()["KeyMetadata"]["Arn"]
    # ReEncrypt needs ReEncryptFrom on the source key: the pinned policy does not give it
    _denied(client.re_encrypt, CiphertextBlob=blob, DestinationKeyId=open_key)
    # an alias onto the sealed key does not make its statement go away
    client.create_alias(AliasName="alias/sealed-test", TargetKeyId=sealed)
    _denied(client.generate_data_key, KeyId="alias/sealed-test", KeySpec="AES_256")
    # nor may the alias be moved off a key whose policy does not allow UpdateAlias for it
    locked = client.create_key()["KeyMetadata"]["Arn"]
    policy = key_policy(HEX, "123456789012")
    policy["Statement"].append(
        {"Sid": "no alias moves", "Effect": "Deny", "Principal": "*", "Action": ["kms:UpdateAlias", "kms:DeleteAlias"], "Resource": "*"}
    )
    client.put_key_policy(KeyId=locked, PolicyName="default", Policy=json.dumps(policy))
    client.create_alias(AliasName="alias/locked-test", TargetKeyId=locked)
    _denied(client.update_alias, AliasName="alias/locked-test", TargetKeyId=open_key)
    _denied(client.delete_alias, AliasName="alias/locked-test")


def test_requests_the_layer_cannot_judge_are_refused(world: World) -> None:
    import urllib.error
    import urllib.request

    def post(target: str, body: bytes, extra: dict[str, str] | None = None) -> dict[str, Any]:
        req = urllib.request.Request(
            world.kms.endpoint_url + "/",
            data=body,
            headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1", **(extra or {})},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        return dict(json.loads(info.value.read()))

    _arn, blob = world.sealed_key(b"q" * 32)
    body = json.dumps({"CiphertextBlob": base64.b64encode(blob).decode()}).encode()
    assert post("TrentService.FutureDecrypt", body)["__type"] == "UnsupportedOperationException"
    assert post("Other.Decrypt", body)["__type"] == "UnknownOperationException"
    assert post("TrentService.Decrypt", b"[1]")["__type"] == "SerializationException"
    gz = post("TrentService.Decrypt", body, {"Content-Encoding": "gzip"})
    assert gz["__type"] == "SerializationException"


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
    # the CiphertextBlob is a normal KMS ciphertext of that same key, released only to the enclave
    again = client.decrypt(CiphertextBlob=dk["CiphertextBlob"], Recipient=_recipient(doc))
    assert cms.decrypt(again["CiphertextForRecipient"], _RSA) == data_key
    _denied(client.decrypt, CiphertextBlob=dk["CiphertextBlob"])


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
                "Principal": "*",
                "Action": "kms:*",
                "Resource": "*",
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


# --- the enclave's side of KMS release, and stale documents (issue 16) ------------------------------------


def test_a_stale_document_is_refused(world: World) -> None:
    """A document signed four hours ago, by a leaf that has expired since: the local KMS verifies it at
    the time of the request, as KMS does, and refuses it before any key is looked at."""
    import datetime as dt

    from core.crypto import cose
    from emulator.nsm import encode_payload

    then = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=4)
    module = "i-0123456789abcdef0-enc00000000005ta1e"
    signer = world.pki.leaf_for(module, now=then)
    assert signer.not_after < dt.datetime.now(dt.UTC)  # the leaf really is expired now
    payload = encode_payload(module_id=module, timestamp_ms=int(then.timestamp() * 1000), pcrs=PCRS,
                             certificate=signer.certificate, cabundle=list(signer.cabundle), public_key=_SPKI,
                             user_data=None, nonce=None)
    stale = cose.sign(payload, signer.key).to_bytes(tagged=False)
    _arn, blob = world.sealed_key(b"s" * 32)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        world.client().decrypt(CiphertextBlob=blob, Recipient=_recipient(stale))
    err = info.value.response["Error"]
    assert err["Code"] == "ValidationException"
    assert err["Message"].startswith("the attestation document failed verification: ")
    assert "expired" in err["Message"] or "not valid" in err["Message"]
    # the same request with a fresh document is served: the refusal was the staleness
    _arn, blob = world.sealed_key(b"f" * 32)
    fresh = world.client().decrypt(CiphertextBlob=blob, Recipient=_recipient(world.document()))
    assert cms.decrypt(fresh["CiphertextForRecipient"], _RSA) == b"f" * 32


def test_the_enclave_refuses_a_plaintext_sent_despite_its_recipient(world: World) -> None:
    """enclave_app.kms.Recipient.open: a KMS (or a parent in the middle) that answers a Recipient request
    with the Plaintext as well has sent the secret in clear over the proxy; the enclave must not use it."""
    from enclave_app.kms import KmsError, Recipient

    recipient = Recipient(_RSA, world.document())
    _arn, blob = world.sealed_key(b"k" * 32)
    answer = world.client().decrypt(CiphertextBlob=blob, Recipient=recipient.request())
    assert recipient.open(answer, "Decrypt") == b"k" * 32  # the honest answer opens
    with pytest.raises(KmsError) as caught:
        recipient.open({**answer, "Plaintext": b"k" * 32}, "Decrypt")
    assert caught.value.message == "KMS returned a plaintext despite the Recipient; refusing it"
    assert caught.value.where == "kms:Decrypt"
    with pytest.raises(KmsError) as missing:
        recipient.open({"Plaintext": b"k" * 32}, "Decrypt")
    assert missing.value.message == "KMS answered without CiphertextForRecipient"


def test_the_enclave_refuses_a_kms_endpoint_outside_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Nitro the parent must not choose where KMS is: a parent-chosen plain-HTTP endpoint could be a
    fake KMS handing the enclave a key the parent knows. Only the emulator (its vsock folder) allows it."""
    from enclave_app.kms import KmsError, endpoint_for

    monkeypatch.delenv("NITRODECK_VSOCK_DIR", raising=False)
    with pytest.raises(KmsError) as caught:
        endpoint_for({"endpoint_url": "http://10.0.0.7:4566"}, "us-east-1")
    assert (caught.value.message, caught.value.where) == ("endpoint_url is accepted only under the emulator",
                                                          "provision")
    monkeypatch.setenv("NITRODECK_VSOCK_DIR", "/tmp/nd-vsock-test")
    assert endpoint_for({"endpoint_url": "http://127.0.0.1:4566"}, "us-east-1") == "http://127.0.0.1:4566"


def test_moto_has_no_port_of_its_own() -> None:
    """Only the layer listens: a moto HTTP server on loopback let any local process decrypt what a key
    policy protects, bypassing the layer entirely."""
    import psutil

    def listening() -> set[int]:
        return {
            c.laddr.port
            for c in psutil.Process().net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        }

    before = listening()
    kms = LocalKms().start()
    try:
        assert listening() - before == {kms.port}
        assert kms.moto_url == "in-process"
    finally:
        kms.stop()
