"""One forged chain per chain rule (core.attest.verify.CHAIN_RULES), each failing exactly that rule.

The chains are built here with ``cryptography`` in the shape of the real one (root -> regional ->
zonal -> instance -> leaf, P-384, ecdsa-with-SHA384, pathlens 2/1/0, the real key usages), and the
document is signed by the leaf, so the baseline verifies against the test root and each forgery
breaks one thing. Every case asserts the exact failed checks and the rule id and certificate named.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from core.attest.trust import TrustRoot
from core.attest.verify import CHAIN_RULES, VerificationReport, verify
from core.crypto import cose
from emulator.nsm import encode_payload

MODULE_ID = "i-0123456789abcdef0-enc0191cceb4289903f"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
P384 = ec.SECP384R1()

Key = Any  # an EC or Ed25519 private key


def usage(*, signature: bool = False, cert_sign: bool = False, crl: bool = False, non_rep: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(signature, non_rep, False, False, False, cert_sign, crl, False, False)


@dataclass
class Spec:
    """One certificate of the chain, as the real chain has it unless a case changes it."""

    cn: str
    ca: bool | None = True  # None: no basicConstraints at all
    pathlen: int | None = None
    bc_critical: bool = True
    key_usage: x509.KeyUsage | None = field(default_factory=lambda: usage(cert_sign=True, crl=True, signature=True))
    hash: Any = field(default_factory=hashes.SHA384)
    key: Key = None  # default: a fresh P-384 key
    lifetime: dt.timedelta = dt.timedelta(days=1)
    foreign_signer: bool = False  # signed by a stranger's key under the right issuer name


def real_shape() -> list[Spec]:
    """root, regional, zonal, instance, leaf (the order they are issued in)."""
    return [
        Spec("forged.nitro-enclaves", pathlen=None, lifetime=dt.timedelta(days=3650)),
        Spec("regional.forged.nitro-enclaves", pathlen=2),
        Spec("zonal.forged.nitro-enclaves", pathlen=1),
        Spec("i-0123456789abcdef0.forged.nitro-enclaves", pathlen=0, key_usage=usage(cert_sign=True)),
        Spec(f"{MODULE_ID}.forged.aws", ca=False, key_usage=usage(signature=True, non_rep=True),
             lifetime=dt.timedelta(hours=3, seconds=3)),
    ]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(specs: list[Spec]) -> tuple[list[x509.Certificate], Key]:
    """The certificates, root first, and the leaf's key."""
    certs: list[x509.Certificate] = []
    keys: list[Key] = []
    for index, spec in enumerate(specs):
        key = spec.key or ec.generate_private_key(P384)
        issuer_key = key if index == 0 else keys[-1]
        if spec.foreign_signer:
            issuer_key = ec.generate_private_key(P384)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(spec.cn))
            .issuer_name(_name(spec.cn) if index == 0 else certs[-1].subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(minutes=5))
            .not_valid_after(NOW + spec.lifetime)
        )
        if spec.ca is not None:
            builder = builder.add_extension(x509.BasicConstraints(spec.ca, spec.pathlen if spec.ca else None),
                                            critical=spec.bc_critical)
        if spec.key_usage is not None:
            builder = builder.add_extension(spec.key_usage, critical=index < len(specs) - 1)
        algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else spec.hash
        certs.append(builder.sign(issuer_key, algorithm))
        keys.append(key)
    return certs, keys[-1]


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def document(certs: list[x509.Certificate], leaf_key: ec.EllipticCurvePrivateKey,
             leaf_der: bytes | None = None, bundle: list[bytes] | None = None) -> bytes:
    payload = encode_payload(
        module_id=MODULE_ID, timestamp_ms=int(NOW.timestamp() * 1000), pcrs={i: bytes(48) for i in range(16)},
        certificate=leaf_der or der(certs[-1]), cabundle=bundle or [der(c) for c in certs[:-1]],
        public_key=None, user_data=None, nonce=None,
    )
    return cose.sign(payload, leaf_key).to_bytes()


def root_of(certs: list[x509.Certificate]) -> list[TrustRoot]:
    return [TrustRoot.from_cert("forged-test-root", certs[0])]


def forged(change: Callable[[list[Spec]], None]) -> tuple[bytes, list[TrustRoot]]:
    specs = real_shape()
    change(specs)
    certs, leaf_key = issue(specs)
    return document(certs, leaf_key), root_of(certs)


def failed(report: VerificationReport) -> set[str]:
    return {c.name for c in report.failed()}


def test_baseline_forged_chain_verifies_against_its_own_root() -> None:
    doc, roots = forged(lambda specs: None)
    report = verify(doc, roots=roots)
    assert report.ok, report.failed()
    assert report.check("chain").detail.startswith("5 certificates")  # type: ignore[union-attr]
    assert failed(verify(doc)) == {"root", "chain", "validity"}  # never against the AWS root


def _set(index: int, **changes: Any) -> Callable[[list[Spec]], None]:
    def change(specs: list[Spec]) -> None:
        specs[index] = replace(specs[index], **changes)
    return change


def _insert_ca(specs: list[Spec]) -> None:
    specs.insert(3, Spec("extra.forged.nitro-enclaves", pathlen=5))


def _drop_version(cert_der: bytes) -> bytes:
    """The same certificate as X.509 v1: the [0] version field removed and both lengths fixed."""
    assert cert_der[:2] == b"\x30\x82" and cert_der[4:6] == b"\x30\x82" and cert_der[8:13] == bytes.fromhex("a003020102")
    outer, tbs = int.from_bytes(cert_der[2:4], "big") - 5, int.from_bytes(cert_der[6:8], "big") - 5
    return b"\x30\x82" + outer.to_bytes(2, "big") + b"\x30\x82" + tbs.to_bytes(2, "big") + cert_der[13:]


def _with_leaf_der(mangle: Callable[[bytes], bytes]) -> Callable[[], tuple[bytes, list[TrustRoot]]]:
    def build() -> tuple[bytes, list[TrustRoot]]:
        certs, leaf_key = issue(real_shape())
        return document(certs, leaf_key, leaf_der=mangle(der(certs[-1]))), root_of(certs)
    return build


def _bundle_entry(index: int, mangle: Callable[[bytes], bytes]) -> Callable[[], tuple[bytes, list[TrustRoot]]]:
    def build() -> tuple[bytes, list[TrustRoot]]:
        certs, leaf_key = issue(real_shape())
        bundle = [der(c) for c in certs[:-1]]
        bundle[index] = mangle(bundle[index])
        return document(certs, leaf_key, bundle=bundle), root_of(certs)
    return build


def _other_signer() -> tuple[bytes, list[TrustRoot]]:
    certs, _ = issue(real_shape())
    return document(certs, ec.generate_private_key(P384)), root_of(certs)


def _untrusted_root() -> tuple[bytes, list[TrustRoot]]:
    doc, _ = forged(lambda specs: None)
    return doc, []


def _expired_leaf() -> tuple[bytes, list[TrustRoot]]:
    return forged(_set(4, lifetime=dt.timedelta(minutes=-1)))


# rule -> variant -> (build, the failed checks, the certificate or field the check names)
Case = tuple[Callable[[], tuple[bytes, list[TrustRoot]]], set[str], str]
BROKEN = {"chain", "validity"}  # validity is "not checked: the chain is broken"
CHAIN_CASES: dict[str, dict[str, Case]] = {
    "signature-es384": {"other-key": (_other_signer, {"signature"}, "signature")},
    "root-pinned": {"unknown-root": (_untrusted_root, {"root", "chain", "validity"}, "cabundle[0]")},
    "chain-der": {
        # issue 9: an invalid X.509 version raised InvalidVersion (not a ValueError) out of verify()
        "leaf-version-7": (_with_leaf_der(lambda d: d[:12] + b"\x07" + d[13:]), {"signature", *BROKEN}, "certificate"),
        "zonal-not-der": (_bundle_entry(2, lambda d: b"\x30\x03\x02\x01\x00"), BROKEN, "cabundle[2]"),
    },
    # the v1 leaf still carries the key that signed the document: only the chain fails
    "chain-x509-v3": {"leaf-v1": (_with_leaf_der(_drop_version), BROKEN, "certificate")},
    "chain-signed-by": {"zonal-by-stranger": (lambda: forged(_set(2, foreign_signer=True)), BROKEN, "cabundle[2]")},
    "chain-sig-es384": {
        "instance-sha256": (lambda: forged(_set(3, hash=hashes.SHA256())), BROKEN, "cabundle[3]"),
        "leaf-sha512": (lambda: forged(_set(4, hash=hashes.SHA512())), BROKEN, "certificate"),
    },
    "chain-key-p384": {
        "zonal-p256": (lambda: forged(_set(2, key=ec.generate_private_key(ec.SECP256R1()))), BROKEN, "cabundle[2]"),
        "regional-ed25519": (lambda: forged(_set(1, key=ed25519.Ed25519PrivateKey.generate())), BROKEN, "cabundle[1]"),
    },
    "chain-leaf-not-ca": {"leaf-is-ca": (lambda: forged(_set(4, ca=True)), BROKEN, "certificate")},
    "chain-leaf-key-usage": {
        "cert-sign-only": (lambda: forged(_set(4, key_usage=usage(cert_sign=True))), BROKEN, "certificate"),
        "no-key-usage": (lambda: forged(_set(4, key_usage=None)), BROKEN, "certificate"),
    },
    "chain-ca": {
        "instance-not-ca": (lambda: forged(_set(3, ca=False)), BROKEN, "cabundle[3]"),
        "zonal-no-basic-constraints": (lambda: forged(_set(2, ca=None)), BROKEN, "cabundle[2]"),
        "regional-not-critical": (lambda: forged(_set(1, bc_critical=False)), BROKEN, "cabundle[1]"),
    },
    "chain-path-length": {
        "zonal-pathlen-0": (lambda: forged(_set(2, pathlen=0)), BROKEN, "cabundle[2]"),
        "one-ca-too-many": (lambda: forged(_insert_ca), BROKEN, "cabundle[2]"),
    },
    "chain-ca-key-usage": {
        "zonal-signature-only": (lambda: forged(_set(2, key_usage=usage(signature=True))), BROKEN, "cabundle[2]"),
        "instance-no-key-usage": (lambda: forged(_set(3, key_usage=None)), BROKEN, "cabundle[3]"),
    },
    "validity": {"expired-leaf": (_expired_leaf, {"validity"}, "certificate")},
}


@pytest.mark.parametrize(("rule", "variant"), [(r, v) for r in CHAIN_CASES for v in CHAIN_CASES[r]],
                         ids=[f"{r}-{v}" for r in CHAIN_CASES for v in CHAIN_CASES[r]])
def test_chain_rule(rule: str, variant: str) -> None:
    build, checks, where = CHAIN_CASES[rule][variant]
    doc, roots = build()
    report = verify(doc, roots=roots)
    assert failed(report) == checks, report.failed()
    name = {"signature-es384": "signature", "root-pinned": "root", "validity": "validity"}.get(rule, "chain")
    check = report.check(name)
    assert check is not None and check.ok is False
    assert (check.rule, check.field) == (rule, where), check
    assert check.detail.endswith(f"(rule {rule})"), check  # the text output names the rule too
    assert report.document is not None  # only the chain is forged: the format holds


def test_every_chain_rule_has_a_forged_chain() -> None:
    assert set(CHAIN_CASES) == set(CHAIN_RULES)


def test_unparsable_names_in_an_untrusted_root_are_a_failed_check() -> None:
    """Issue 9: a root whose CN is a BIT STRING made cryptography raise TypeError out of verify()."""
    certs, leaf_key = issue(real_shape())
    root = der(certs[0])
    cn = b"\x0c\x15forged.nitro-enclaves"
    assert root.count(cn) == 2  # issuer and subject
    bad_root = root.replace(cn, b"\x03\x15\x00" + b"A" * 20)
    report = verify(document(certs, leaf_key, bundle=[bad_root, *[der(c) for c in certs[1:-1]]]), roots=root_of(certs))
    assert failed(report) == {"root", "chain", "validity"}
    assert "unreadable certificate" in report.check("root").detail  # type: ignore[union-attr]


def test_emulator_and_real_documents_name_no_rule_when_they_pass() -> None:
    doc, roots = forged(lambda specs: None)
    assert all(c.rule is None for c in verify(doc, roots=roots).checks)
    assert cbor2.loads(doc)[0] == bytes.fromhex("a1013822")
