"""Attestation verification on the real AWS documents and on the emulator's, incl. tampering and policy."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from core import home
from core.attest import trust
from core.attest import verify as att
from core.attest.trust import AWS_ROOT_G1_SHA256, TrustRoot, aws_root
from core.attest.verify import AttestationError, Policy, parse_document, pcrs_from_json, verify
from core.crypto import cose
from emulator.nsm import EmulatedNsm
from emulator.pki import EmulatorPki, Issued
from tests import conftest

MODULE_ID = "i-0123456789abcdef0-enc0191cceb4289903f"  # same length as real module ids
IMAGE_PCRS = {0: b"\x10" * 48, 1: b"\x11" * 48, 2: b"\x12" * 48, 8: b"\x18" * 48}


def manifest() -> dict[str, Any]:
    return json.loads(conftest.testdata("attestation", "MANIFEST.json").read_text())["documents"]


def real(name: str) -> tuple[bytes, dt.datetime, dict[str, Any]]:
    meta = manifest()[name]
    data = conftest.testdata("attestation", name).read_bytes()
    return data, dt.datetime.fromtimestamp(meta["timestamp_ms"] / 1000, dt.UTC), meta


_MANIFEST = conftest.TESTDATA / "attestation" / "MANIFEST.json"
# when the shared data is missing, one placeholder case reaches conftest.testdata(), which skips or fails
REAL_NAMES = sorted(json.loads(_MANIFEST.read_text())["documents"]) if _MANIFEST.exists() else ["MANIFEST.json"]
NONDEBUG = "evervault-beta-nondebug-2022-10-13.bin"
DEBUG = "blocky-nitrite-debug-2024-09-07.bin"


def names(report: att.VerificationReport) -> set[str]:
    return {c.name for c in report.failed()}


def emulator_document(nsm: EmulatedNsm, **fields: bytes | None) -> bytes:
    answer = cbor2.loads(nsm.handle(cbor2.dumps({"Attestation": {
        "user_data": fields.get("user_data"), "nonce": fields.get("nonce"), "public_key": fields.get("public_key")}})))
    return bytes(answer["Attestation"]["document"])


@pytest.fixture(scope="module")
def pki() -> Iterator[EmulatorPki]:
    with conftest.scratch_dir("nd-att-pki-") as etc:
        yield EmulatorPki.load_or_create(etc)


@pytest.fixture(scope="module")
def emu_nsm(pki: EmulatorPki) -> EmulatedNsm:
    return EmulatedNsm(MODULE_ID, dict(IMAGE_PCRS), False, "i-1234567890abcdef0", None, pki)


def emu_root(pki: EmulatorPki) -> list[TrustRoot]:
    return [TrustRoot.from_cert("emulator", pki.root.cert)]


# --- real documents -------------------------------------------------------------------------------


def test_builtin_root_is_the_aws_root() -> None:
    pem = conftest.testdata("attestation", "aws_nitro_root_g1.pem").read_bytes()
    shipped = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert aws_root().der == shipped and aws_root().fingerprint == AWS_ROOT_G1_SHA256


@pytest.mark.parametrize("name", REAL_NAMES)
def test_real_documents_verify_at_their_time_and_expire(name: str) -> None:
    data, at, meta = real(name)
    report = verify(data, at=at)
    assert report.ok, report.failed()
    assert report.document is not None and report.document.module_id == meta["module_id"]
    assert report.document.pcrs[0].hex() == meta["pcr0"]
    now = verify(data)
    assert not now.ok and names(now) == {"validity"}
    assert "expired" in now.check("validity").detail  # type: ignore[union-attr]
    # the chain's validity is about dates, not just the leaf: 4 hours later fails too
    assert names(verify(data, at=at + dt.timedelta(hours=4))) == {"validity"}
    # before the chain existed the document is also from the future
    assert names(verify(data, at=at - dt.timedelta(days=40))) == {"validity", "age"}


def test_blocky_document_with_1024_byte_fields_verifies() -> None:
    data, at, _ = real("blocky-nitrite-2024-09-07.bin")
    report = verify(data, at=at)
    assert report.ok and report.document is not None
    doc = report.document
    assert len(doc.user_data or b"") == len(doc.nonce or b"") == len(doc.public_key or b"") == 1024


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1:]


def test_flipped_byte_in_each_region_fails_for_the_right_reason() -> None:
    data, at, _ = real(NONDEBUG)
    doc = parse_document(data)
    assert data[2:6] == bytes.fromhex("a1013822")
    pcr5 = data.find(b"\x05\x58\x30") + 3 + 10
    leaf_end = data.find(doc.certificate) + len(doc.certificate) - 1
    zonal_end = data.find(doc.cabundle[2]) + len(doc.cabundle[2]) - 1
    cases = {
        # the protected header is part of the format: exactly {1: -35} (rule cose-protected)
        "protected alg": (5, {"structure"}),
        "protected label": (3, {"structure"}),
        "payload pcr5": (pcr5, {"signature"}),
        "signature": (len(data) - 1, {"signature"}),
        # certificates sit inside the signed payload, so both the signature and the chain fail
        "leaf cert": (leaf_end, {"signature", "chain", "validity"}),
        "zonal cert": (zonal_end, {"signature", "chain", "validity"}),
    }
    for label, (offset, expected) in cases.items():
        report = verify(_flip(data, offset), at=at)
        assert not report.ok, label
        assert names(report) == expected, (label, report.failed())
    assert "cabundle[2]" in verify(_flip(data, zonal_end), at=at).check("chain").detail  # type: ignore[union-attr]
    assert "certificate is not signed" in verify(_flip(data, leaf_end), at=at).check("chain").detail  # type: ignore[union-attr]


def test_failures_are_never_cached() -> None:
    data, at, _ = real(NONDEBUG)
    doc = parse_document(data)
    bad = _flip(data, data.find(doc.cabundle[1]) + len(doc.cabundle[1]) - 1)
    att.clear_chain_cache()
    for _ in range(2):
        assert "chain" in names(verify(bad, at=at))
    assert len(att._chain_cache) == 0
    assert verify(data, at=at).ok and verify(data, at=at).ok
    assert len(att._chain_cache) == 1
    # a cached chain still re-checks dates
    assert names(verify(data)) == {"validity"}


@pytest.mark.parametrize("cut", [0, 1, 5, 100, 2000, -97, -1])
def test_truncated_documents(cut: int) -> None:
    data, at, _ = real(NONDEBUG)
    broken = data[:cut]
    with pytest.raises(AttestationError):
        parse_document(broken)
    report = verify(broken, at=at)
    assert not report.ok and report.document is None
    assert report.checks[0].name == "structure" and report.checks[0].ok is False


def test_policy_checks_named() -> None:
    data, at, meta = real(NONDEBUG)
    doc = parse_document(data)
    good = Policy(pcrs={0: meta["pcr0"], 4: doc.pcrs[4].hex()}, nonce=doc.nonce, max_age=10)
    report = verify(data, at=at, policy=good)
    assert report.ok and report.check("pcr0").ok and report.check("nonce").ok  # type: ignore[union-attr]
    wrong = Policy(pcrs={0: "00" * 47 + "01", 1: doc.pcrs[1].hex()}, nonce=b"other nonce")
    assert names(verify(data, at=at, policy=wrong)) == {"pcr0", "nonce"}
    assert names(verify(data, at=at, policy=Policy(user_data=b"x"))) == {"user_data"}
    assert names(verify(data, at=at, policy=Policy(pcrs={20: "00" * 48}))) == {"pcr20"}
    old = verify(data, at=at + dt.timedelta(minutes=5), policy=Policy(max_age=60))
    assert names(old) == {"age"}


def test_pcr_mismatch_detail_shows_where_the_values_differ() -> None:
    data, at, meta = real(NONDEBUG)
    late = meta["pcr0"][:-1] + ("0" if meta["pcr0"][-1] != "0" else "1")  # only the last digit differs
    detail = verify(data, at=at, policy=Policy(pcrs={0: late})).check("pcr0").detail  # type: ignore[union-attr]
    assert meta["pcr0"] in detail and late in detail and "hex digit 95" in detail
    early = "f" + meta["pcr0"][1:] if meta["pcr0"][0] != "f" else "0" + meta["pcr0"][1:]
    detail = verify(data, at=at, policy=Policy(pcrs={0: early})).check("pcr0").detail  # type: ignore[union-attr]
    assert detail == f"mismatch: document has {meta['pcr0'][:16]}…, expected {early[:16]}…"


def test_debug_documents_report_zero_pcrs_as_debug() -> None:
    data, at, _ = real(DEBUG)
    expected = real("blocky-nitrite-2024-09-07.bin")[2]["pcr0"]
    report = verify(data, at=at, policy=Policy(pcrs={0: expected}))
    check = report.check("pcr0")
    assert check is not None and check.ok is False and check.detail.startswith("debug mode: all-zero PCRs")
    assert "debug-mode" in verify(data, at=at).check("pcrs").detail  # type: ignore[union-attr]


def test_pcrs_from_json_shapes() -> None:
    pcr = "ab" * 48
    assert pcrs_from_json({"PCR0": pcr, "PCR8": pcr.upper()}) == {0: pcr, 8: pcr}
    assert pcrs_from_json({"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR1": pcr}}) == {1: pcr}
    for bad in ({"PCR0": "zz" * 48}, {"PCRX": pcr}, {"PCR0": "ab"}, [], {}):
        with pytest.raises(AttestationError):
            pcrs_from_json(bad)


# --- the emulator's documents ---------------------------------------------------------------------


def _head(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """(major, additional info, argument, header length) of the CBOR item at ``pos``."""
    first = data[pos]
    major, ai = first >> 5, first & 0x1F
    if ai < 24:
        return major, ai, ai, 1
    if ai == 31:
        return major, ai, -1, 1
    size = 1 << (ai - 24)
    return major, ai, int.from_bytes(data[pos + 1:pos + 1 + size], "big"), 1 + size


def _skip(data: bytes, pos: int) -> int:
    major, _, arg, hl = _head(data, pos)
    pos += hl
    if major in (2, 3):
        return pos + arg
    if major in (4, 5):
        for _ in range(arg * (2 if major == 5 else 1)):
            pos = _skip(data, pos)
    if major == 6:
        return _skip(data, pos)
    return pos


def shape(document: bytes) -> list[tuple[str, int, int | None]]:
    """For each top-level payload key in order: (key, value head byte, item count of maps/arrays)."""
    payload = cose.decode(document).payload
    major, _, count, pos = _head(payload, 0)
    assert major == 5
    out = []
    while (count == -1 and payload[pos] != 0xFF) or (count != -1 and len(out) < count):
        key_end = _skip(payload, pos)
        key = cbor2.loads(payload[pos:key_end])
        vmajor, _, varg, _ = _head(payload, key_end)
        out.append((key, payload[key_end], varg if vmajor in (4, 5) else None))
        pos = _skip(payload, key_end)
    return out


def test_emulator_document_matches_real_cbor_shape(emu_nsm: EmulatedNsm) -> None:
    data, _, _ = real(NONDEBUG)  # nonce 256 bytes, public_key and user_data null
    ours = emulator_document(emu_nsm, nonce=b"\x07" * 256)
    assert ours[:6] == data[:6] == bytes.fromhex("8444a1013822")
    assert ours[6] == data[6] == 0xA0  # empty unprotected map
    assert cose.decode(ours).payload[:1] == b"\xa9"
    assert shape(ours) == shape(data)
    keys = [k for k, _, _ in shape(ours)]
    assert keys == ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key",
                    "user_data", "nonce"]
    heads = {k: h for k, h, _ in shape(ours)}
    assert heads["timestamp"] == 0x1B and heads["pcrs"] == 0xB0 and heads["cabundle"] == 0x84
    assert heads["public_key"] == heads["user_data"] == 0xF6
    sig = cose.decode(ours).signature
    assert len(sig) == 96 and ours[-98:-96] == b"\x58\x60"
    # the indefinite-map document has the same keys and value forms in the same order
    indefinite = real("unknown-source-2026-02-02.bin")[0]
    assert [k for k, _, _ in shape(indefinite)] == keys


def test_emulator_documents_verify_only_against_emulator_root(emu_nsm: EmulatedNsm, pki: EmulatorPki) -> None:
    nonce = b"n" * 32
    doc = emulator_document(emu_nsm, nonce=nonce, user_data=b"u" * 1024, public_key=b"k" * 1024)
    report = verify(doc, roots=emu_root(pki), policy=Policy(pcrs={0: IMAGE_PCRS[0].hex()}, nonce=nonce, max_age=60))
    assert report.ok, report.failed()
    default = verify(doc)
    assert names(default) == {"root", "chain", "validity"}
    assert "emulator" in default.check("root").detail  # type: ignore[union-attr]
    # inside the leaf's 3 hours it still verifies; after, it is expired
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    assert verify(doc, roots=emu_root(pki), at=later).ok
    assert names(verify(doc, roots=emu_root(pki), at=later + dt.timedelta(hours=2))) == {"validity"}


def test_trust_emulator_flag_uses_home_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NITRODECK_HOME", str(tmp_path))
    nsm = EmulatedNsm(MODULE_ID, dict(IMAGE_PCRS), True, "i-1234567890abcdef0", None)  # pki from the home
    doc = emulator_document(nsm)
    assert (home.emulator_etc() / "emulator-root-ca.pem").exists()
    assert not verify(doc).ok
    assert verify(doc, trust_emulator=True).ok
    report = verify(doc, trust_emulator=True, policy=Policy(pcrs={0: IMAGE_PCRS[0].hex()}))
    assert report.check("pcr0").detail.startswith("debug mode")  # type: ignore[union-attr]


def test_lookalike_aws_root_is_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    fake = (
        x509.CertificateBuilder()
        .subject_name(aws_root().cert.subject)
        .issuer_name(aws_root().cert.subject)
        .public_key(key.public_key())
        .serial_number(aws_root().cert.serial_number)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA384())
    )
    pki = EmulatorPki(Issued(fake, key), tmp_path)
    nsm = EmulatedNsm(MODULE_ID, dict(IMAGE_PCRS), False, "i-1234567890abcdef0", None, pki)
    doc = emulator_document(nsm)
    assert names(verify(doc)) == {"root", "chain", "validity"}
    assert verify(doc, roots=[TrustRoot.from_cert("fake", fake)]).ok  # otherwise a sound document


def test_tagged_document_accepted(emu_nsm: EmulatedNsm, pki: EmulatorPki) -> None:
    doc = emulator_document(emu_nsm)
    tagged = cose.decode(doc).to_bytes(tagged=True)
    assert tagged[0] == 0xD2
    report = verify(tagged, roots=emu_root(pki))
    assert report.ok and report.document is not None and report.document.sign1.tagged


def test_real_document_with_swapped_root_fails(pki: EmulatorPki) -> None:
    data, at, _ = real(NONDEBUG)
    sign1 = cose.decode(data)
    body = dict(cbor2.loads(sign1.payload))
    body["cabundle"] = [pki.root_der, *list(body["cabundle"])[1:]]
    swapped = cose.Sign1(sign1.protected, {}, cbor2.dumps(body), sign1.signature).to_bytes()
    report = verify(swapped, at=at, roots=[aws_root(), *emu_root(pki)])
    # the root is trusted here, but the AWS intermediates are not signed by it, and the payload changed
    assert names(report) == {"signature", "chain", "validity"}
    assert "cabundle[1] is not signed by root emulator" in report.check("chain").detail  # type: ignore[union-attr]
    assert names(verify(swapped, at=at)) == {"signature", "root", "chain", "validity"}


@pytest.mark.parametrize(
    ("kwargs", "emulator_why", "note"),
    [
        ({}, None, None),
        ({"backend": "real", "backend_chosen_by": "auto"}, None, None),
        ({"backend": "emulator", "backend_chosen_by": "auto"}, None, "chosen automatically"),
        ({"backend": "emulator", "backend_chosen_by": "flag"}, "--backend emulator", None),
        ({"backend": "emulator", "backend_chosen_by": "env"}, "NITRODECK_BACKEND=emulator", None),
        ({"backend": "real", "backend_chosen_by": "flag", "emulator_flag": True}, "--trust emulator", None),
        ({"backend": "emulator", "backend_chosen_by": "auto", "emulated_enclave": True},
         "the enclave is emulated (emulator backend)", None),
    ],
    ids=["nothing", "auto-real", "auto-emulator", "flag", "env", "trust-flag", "emulated-enclave"],
)
def test_choose_roots(tmp_path: Path, kwargs: dict[str, Any], emulator_why: str | None, note: str | None) -> None:
    """Issue 17: AWS alone unless the operator asks; an automatic choice of the emulator never widens trust."""
    etc = tmp_path / "etc"
    emulator = TrustRoot.from_cert("nitrodeck-emulator-test-root", EmulatorPki.load_or_create(etc).root.cert)
    choice = trust.choose_roots(etc_dir=etc, **kwargs)
    expected = [(aws_root().fingerprint, "built in: AWS Nitro Enclaves root G1")]
    if emulator_why:
        expected.append((emulator.fingerprint, emulator_why))
    assert [(r.fingerprint, why) for r, why in zip(choice.roots, choice.reasons, strict=True)] == expected
    assert (note is None and choice.notes == []) or (note is not None and note in choice.notes[0])
    # a home without an emulator root: the request is noted, nothing is added
    empty = trust.choose_roots(etc_dir=tmp_path / "none", **kwargs)
    assert [r.fingerprint for r in empty.roots] == [aws_root().fingerprint]
    if emulator_why:
        assert empty.notes == [f"the emulator root was requested ({emulator_why}) but this home has none yet"]
