"""One test per format rule of an attestation document (core.attest.document.RULES).

Each case builds a document with the emulator's test PKI (emulator/pki.py: the same leaf and cabundle
the emulated NSM uses), changes exactly one thing, and re-signs it with the leaf key, so the signature
and chain still hold and only the rule under test can fail. The baseline (the same builder with
nothing changed) verifies, and so do the allowed edges of each rule (tag 18, 1024-byte fields, an
empty user_data, nulls for the optional fields, an indefinite map). The real AWS documents stay
untouched (tests/test_attestation.py verifies them). docs/attestation.md lists each rule with its AWS
source and these test ids; test_every_rule_has_a_test_and_a_docs_row keeps the three in step.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from core.attest.document import MAX_TIMESTAMP_MS, RULES, parse_document
from core.attest.trust import TrustRoot
from core.attest.verify import CHAIN_RULES, verify
from core.crypto import cose
from emulator.nsm import encode_payload
from emulator.pki import EmulatorPki, LeafSigner
from tests import conftest

MODULE_ID = "i-0123456789abcdef0-enc0191cceb4289903f"
ES384_HEADER = bytes.fromhex("a1013822")  # {1: -35}
DOCS = conftest.REPO / "docs" / "attestation.md"


@pytest.fixture(scope="module")
def pki() -> Iterator[EmulatorPki]:
    with conftest.scratch_dir("nd-rules-pki-") as etc:
        yield EmulatorPki.load_or_create(etc)


@pytest.fixture(scope="module")
def signer(pki: EmulatorPki) -> LeafSigner:
    return pki.leaf_for(MODULE_ID)


@pytest.fixture(scope="module")
def roots(pki: EmulatorPki) -> list[TrustRoot]:
    return [TrustRoot.from_cert("emulator-test-root", pki.root.cert)]


# --- building documents -----------------------------------------------------------------------------


class Raw:
    """Bytes spliced into the payload as they are (for encodings cbor2 would not write)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def fields(signer: LeafSigner) -> list[tuple[Any, Any]]:
    """The nine keys in the order real documents carry them, as (key, value) pairs."""
    return [
        ("module_id", MODULE_ID),
        ("digest", "SHA384"),
        ("timestamp", Raw(b"\x1b" + struct.pack(">Q", time.time_ns() // 1_000_000))),
        ("pcrs", {i: bytes([i]) * 48 for i in range(16)}),
        ("certificate", signer.certificate),
        ("cabundle", list(signer.cabundle)),
        ("public_key", None),
        ("user_data", None),
        ("nonce", None),
    ]


def encode(pairs: list[tuple[Any, Any]], indefinite: bool = False) -> bytes:
    """A CBOR map written pair by pair, so duplicate keys and odd encodings survive."""

    def item(value: Any) -> bytes:
        return value.data if isinstance(value, Raw) else cbor2.dumps(value)

    body = b"".join(item(k) + item(v) for k, v in pairs)
    if indefinite:
        return b"\xbf" + body + b"\xff"
    count = len(pairs)
    return (bytes([0xA0 + count]) if count < 24 else bytes([0xB8, count])) + body


def sign(signer: LeafSigner, payload: bytes, protected: bytes = ES384_HEADER) -> bytes:
    """The raw r||s ES384 signature of the COSE Sig_structure, as the NSM makes it."""
    der = signer.key.sign(cose.Sign1(protected, {}, payload, b"").sig_structure(), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    return r.to_bytes(48, "big") + s.to_bytes(48, "big")


def document(
    signer: LeafSigner,
    change: Callable[[list[tuple[Any, Any]]], list[tuple[Any, Any]]] | None = None,
    *,
    payload: bytes | None = None,
    protected: bytes = ES384_HEADER,
    unprotected: dict[Any, Any] | None = None,
    indefinite: bool = False,
) -> bytes:
    pairs = fields(signer)
    if change is not None:
        pairs = change(pairs)
    if payload is None:
        payload = encode(pairs, indefinite)
    return cbor2.dumps([protected, unprotected or {}, payload, sign(signer, payload, protected)])


def set_field(key: str, value: Any) -> Callable[[list[tuple[Any, Any]]], list[tuple[Any, Any]]]:
    return lambda pairs: [(k, value if k == key else v) for k, v in pairs]


def drop_field(key: str) -> Callable[[list[tuple[Any, Any]]], list[tuple[Any, Any]]]:
    return lambda pairs: [(k, v) for k, v in pairs if k != key]


def add_field(key: Any, value: Any) -> Callable[[list[tuple[Any, Any]]], list[tuple[Any, Any]]]:
    return lambda pairs: [*pairs, (key, value)]


def timestamp(ms: int) -> Raw:
    return Raw(b"\x1b" + struct.pack(">Q", ms))


def structure_failure(report: Any) -> Any:
    """The report of a refused document: exactly one failed check, ``structure``, with no document."""
    assert not report.ok and report.document is None
    assert [c.name for c in report.checks] == ["structure"], report.checks
    return report.checks[0]


# --- the baseline and the allowed edges ----------------------------------------------------------------


def test_baseline_resigned_document_verifies(signer: LeafSigner, roots: list[TrustRoot]) -> None:
    doc = document(signer)
    report = verify(doc, roots=roots)
    assert report.ok, report.failed()
    # the builder writes what the emulated NSM writes, byte for byte, apart from time and signature
    parsed = parse_document(doc)
    emulated = encode_payload(module_id=MODULE_ID, timestamp_ms=parsed.timestamp, pcrs=parsed.pcrs,
                              certificate=signer.certificate, cabundle=list(signer.cabundle),
                              public_key=None, user_data=None, nonce=None)
    assert parsed.sign1.payload == emulated


ALLOWED: dict[str, dict[str, Any]] = {
    "tag-18-once": {"tagged": True},
    "indefinite-map": {"indefinite": True},
    "fields-1024-bytes": {"change": lambda p: set_field("nonce", b"n" * 1024)(
        set_field("user_data", b"u" * 1024)(set_field("public_key", b"k" * 1024)(p)))},
    "empty-user-data-and-nonce": {"change": lambda p: set_field("nonce", b"")(set_field("user_data", b"")(p))},
    "optional-fields-absent": {"change": lambda p: drop_field("nonce")(drop_field("user_data")(drop_field("public_key")(p)))},
    "one-pcr": {"change": set_field("pcrs", {31: b"\x00" * 48})},
    "thirty-two-pcrs": {"change": set_field("pcrs", {i: b"\x00" * 48 for i in range(32)})},
    "last-datetime-millisecond": {"change": set_field("timestamp", timestamp(MAX_TIMESTAMP_MS))},
}


@pytest.mark.parametrize("case", sorted(ALLOWED))
def test_allowed_edges_verify(case: str, signer: LeafSigner, roots: list[TrustRoot]) -> None:
    spec = dict(ALLOWED[case])
    tagged = spec.pop("tagged", False)
    doc = document(signer, **spec)
    if tagged:
        doc = cose.decode(doc).to_bytes(tagged=True)
        assert doc[0] == 0xD2
    report = verify(doc, roots=roots)
    if case == "last-datetime-millisecond":  # a document from the far future: parsed, then refused by age
        assert {c.name for c in report.failed()} == {"age"}
        return
    assert report.ok, report.failed()


# --- one refused document per rule ------------------------------------------------------------------------

# rule id -> {variant: (how to build it, the field the check must name)}
Build = Callable[[LeafSigner], bytes]


def _big(signer: LeafSigner) -> bytes:
    return document(signer, add_field("padding", b"\x00" * 17000))


def _trailing(signer: LeafSigner) -> bytes:
    return document(signer) + b"\x00"


def _two_documents(signer: LeafSigner) -> bytes:
    return document(signer) * 2


def _tag(number: int, times: int = 1) -> Build:
    def build(signer: LeafSigner) -> bytes:
        value: Any = cbor2.loads(document(signer))
        for _ in range(times):
            value = cbor2.CBORTag(number, value)
        return cbor2.dumps(value)
    return build


def _envelope(items: list[Any]) -> Build:
    return lambda signer: cbor2.dumps(items)


def _nested(depth: int) -> Any:
    value: Any = b"x"
    for _ in range(depth):
        value = [value]
    return value


CASES: dict[str, dict[str, tuple[Build, str]]] = {
    "document-size": {"over-16k": (_big, "document")},
    "cose-tag": {
        "tag-17": (_tag(17), "COSE_Sign1"),
        "tag-18-twice": (_tag(18, 2), "COSE_Sign1"),
        "self-describe-55799": (_tag(55799), "COSE_Sign1"),
    },
    "cose-single-item": {"trailing-byte": (_trailing, "COSE_Sign1"), "two-documents": (_two_documents, "COSE_Sign1")},
    "cose-array": {
        "three-items": (_envelope([ES384_HEADER, {}, b"p"]), "COSE_Sign1"),
        "payload-text": (_envelope([ES384_HEADER, {}, "payload", b"s" * 96]), "COSE_Sign1[2]"),
    },
    "cbor-well-formed": {
        "nested-17-deep": (lambda s: document(s, set_field("nonce", _nested(17))), "payload"),
        "reserved-head": (lambda s: b"\x84\x44" + ES384_HEADER + b"\xa0\x5c", "COSE_Sign1"),
        "invalid-utf8-text": (lambda s: document(s, set_field("module_id", Raw(b"\x62\xff\xfe"))), "payload"),
    },
    "cbor-no-tags": {
        # cbor2 would decode a bignum (tag 2) to an int and an epoch (tag 1) to a datetime
        "bignum-timestamp": (lambda s: document(s, set_field("timestamp", Raw(b"\xc2\x47" + (10**15).to_bytes(7, "big")))),
                             "payload"),
        "tagged-certificate": (lambda s: document(s, set_field("certificate", cbor2.CBORTag(24, s.certificate))),
                               "payload"),
    },
    "cbor-map-keys": {
        "duplicate-digest": (lambda s: document(s, add_field("digest", "SHA384")), "payload"),
        "duplicate-pcr": (lambda s: document(s, set_field("pcrs", Raw(
            b"\xa2" + cbor2.dumps(0) + cbor2.dumps(b"\x00" * 48) + cbor2.dumps(0) + cbor2.dumps(b"\x01" * 48)))),
            "payload"),
        "bytes-key": (lambda s: document(s, add_field(b"nonce", None)), "payload"),
    },
    "cose-protected": {
        "es512": (lambda s: document(s, protected=bytes.fromhex("a1013823")), "COSE_Sign1[0]"),
        "extra-label": (lambda s: document(s, protected=cbor2.dumps({1: -35, 4: b"kid"})), "COSE_Sign1[0]"),
        "empty": (lambda s: document(s, protected=b""), "COSE_Sign1[0]"),
        "float-alg": (lambda s: document(s, protected=b"\xa1\x01\xf9\xd0\x60"), "COSE_Sign1[0]"),  # -35.0
    },
    "cose-unprotected": {"kid": (lambda s: document(s, unprotected={4: b"kid"}), "COSE_Sign1[1]")},
    "payload-size": {"empty": (lambda s: document(s, payload=b""), "payload")},
    "payload-map": {
        "array": (lambda s: document(s, payload=cbor2.dumps([1, 2])), "payload"),
        # the signature covers the bytes after the map too, so only this rule can refuse them
        "map-then-trailing-byte": (lambda s: document(s, payload=encode(fields(s)) + b"\x00"), "payload"),
        "two-maps": (lambda s: document(s, payload=encode(fields(s)) * 2), "payload"),
    },
    "payload-keys": {
        "unknown-key": (lambda s: document(s, add_field("extra", 1)), "payload"),
        "integer-key": (lambda s: document(s, add_field(1, b"x")), "payload"),
    },
    "payload-required": {
        "no-cabundle": (lambda s: document(s, drop_field("cabundle")), "payload"),
        "null-module-id": (lambda s: document(s, set_field("module_id", None)), "payload"),
    },
    "module-id": {
        "empty": (lambda s: document(s, set_field("module_id", "")), "module_id"),
        "257-chars": (lambda s: document(s, set_field("module_id", "i" * 257)), "module_id"),
        "bytes": (lambda s: document(s, set_field("module_id", MODULE_ID.encode())), "module_id"),
    },
    "digest": {
        # the case: SHA256 with PCRs of the matching size was accepted
        "sha256-with-32-byte-pcrs": (lambda s: document(s, lambda p: set_field("pcrs", {i: b"\x00" * 32 for i in range(16)})(
            set_field("digest", "SHA256")(p))), "digest"),
        "lower-case": (lambda s: document(s, set_field("digest", "sha384")), "digest"),
    },
    "timestamp": {
        "zero": (lambda s: document(s, set_field("timestamp", 0)), "timestamp"),
        "negative": (lambda s: document(s, set_field("timestamp", -1)), "timestamp"),
        "float": (lambda s: document(s, set_field("timestamp", 1.7e12)), "timestamp"),
        # issue 9: 2^64-1 ms is a valid uint .size 8 but no datetime; it used to raise in the age check
        "past-datetime-range": (lambda s: document(s, set_field("timestamp", timestamp(2**64 - 1))), "timestamp"),
        "one-ms-past-9999": (lambda s: document(s, set_field("timestamp", timestamp(MAX_TIMESTAMP_MS + 1))), "timestamp"),
    },
    "pcrs-count": {
        "empty": (lambda s: document(s, set_field("pcrs", {})), "pcrs"),
        "33-entries": (lambda s: document(s, set_field("pcrs", {i: b"\x00" * 48 for i in range(33)})), "pcrs"),
        "array": (lambda s: document(s, set_field("pcrs", [b"\x00" * 48])), "pcrs"),
    },
    "pcrs-index": {
        "32": (lambda s: document(s, set_field("pcrs", {32: b"\x00" * 48})), "pcrs"),
        "negative": (lambda s: document(s, set_field("pcrs", {-1: b"\x00" * 48})), "pcrs"),
        "text": (lambda s: document(s, set_field("pcrs", {"0": b"\x00" * 48})), "pcrs"),
    },
    "pcrs-size": {
        "47-bytes": (lambda s: document(s, set_field("pcrs", {0: b"\x00" * 47})), "pcrs[0]"),
        "32-bytes": (lambda s: document(s, set_field("pcrs", {3: b"\x00" * 32})), "pcrs[3]"),
        "text": (lambda s: document(s, set_field("pcrs", {0: "00" * 48})), "pcrs[0]"),
    },
    "certificate-size": {
        "empty": (lambda s: document(s, set_field("certificate", b"")), "certificate"),
        "1025-bytes": (lambda s: document(s, set_field("certificate", s.certificate + b"\x00" * (1025 - len(s.certificate)))),
                       "certificate"),
        "array": (lambda s: document(s, set_field("certificate", [s.certificate])), "certificate"),
    },
    "cabundle-count": {
        "empty": (lambda s: document(s, set_field("cabundle", [])), "cabundle"),
        "9-entries": (lambda s: document(s, set_field("cabundle", [s.cabundle[0]] * 9)), "cabundle"),
        "bytes": (lambda s: document(s, set_field("cabundle", s.cabundle[0])), "cabundle"),
    },
    "cabundle-size": {
        "empty-entry": (lambda s: document(s, set_field("cabundle", [*s.cabundle, b""])), "cabundle[4]"),
        "1025-bytes": (lambda s: document(s, set_field("cabundle", [s.cabundle[0] + b"\x00" * (1025 - len(s.cabundle[0]))])),
                       "cabundle[0]"),
    },
    "public-key": {
        "zero-length": (lambda s: document(s, set_field("public_key", b"")), "public_key"),
        "1025-bytes": (lambda s: document(s, set_field("public_key", b"k" * 1025)), "public_key"),
        "text": (lambda s: document(s, set_field("public_key", "key")), "public_key"),
    },
    "user-data": {
        "1025-bytes": (lambda s: document(s, set_field("user_data", b"u" * 1025)), "user_data"),
        "false": (lambda s: document(s, set_field("user_data", False)), "user_data"),
    },
    "nonce": {
        "1025-bytes": (lambda s: document(s, set_field("nonce", b"n" * 1025)), "nonce"),
        "integer": (lambda s: document(s, set_field("nonce", 7)), "nonce"),
    },
}


@pytest.mark.parametrize(("rule", "variant"), [(r, v) for r in CASES for v in CASES[r]],
                         ids=[f"{r}-{v}" for r in CASES for v in CASES[r]])
def test_format_rule(rule: str, variant: str, signer: LeafSigner, roots: list[TrustRoot]) -> None:
    build, field = CASES[rule][variant]
    check = structure_failure(verify(build(signer), roots=roots))
    assert (check.rule, check.field) == (rule, field), check
    assert check.detail.startswith(f"{field}: ") and check.detail.endswith(f"(rule {rule})")
    assert check.to_dict()["rule"] == rule


#: a table row's last cell: tests/FILE.py::FUNCTION[RULE-*] (N case|cases)
TEST_CELL = re.compile(r"^(tests/[\w/]+\.py)::(\w+)\[([a-z0-9-]+)-\*\] \((\d+) cases?\)$")


def collected_ids(files: set[str]) -> set[str]:
    """The test ids pytest collects from these files (a subprocess: the table must name real tests)."""
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          *sorted(files)], cwd=conftest.REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return {line.strip() for line in res.stdout.splitlines() if "::" in line}


def test_every_rule_has_a_test_and_a_docs_row() -> None:
    """RULES, these cases and the table in docs/attestation.md name the same rules, and every row's test
    exists: pytest collects exactly the number of cases the row claims under the id it names."""
    assert set(CASES) == set(RULES)
    text = DOCS.read_text()
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|.*\|$", text, re.M)
    assert sorted(rows) == sorted([*RULES, *CHAIN_RULES])
    cells: dict[str, tuple[str, str, str, int]] = {}
    for rule in rows:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{rule}` |"))
        cell = row.rstrip(" |").rsplit(" | ", 1)[1]
        match = TEST_CELL.match(cell)
        assert match, f"row {rule}: its test cell {cell!r} does not name a test"
        path, function, prefix, count = match.groups()
        assert prefix == rule, f"row {rule} names the cases of {prefix}"
        assert (conftest.REPO / path).is_file(), f"row {rule}: {path} does not exist"
        cells[rule] = (path, function, prefix, int(count))
    # each collected case belongs to the longest rule its id starts with (chain-ca-key-usage-x is not chain-ca's)
    owner: dict[tuple[str, str], list[str]] = {}
    for test_id in collected_ids({path for path, _, _, _ in cells.values()}):
        head, _, param = test_id.partition("[")
        rule = max((r for r in cells if param.startswith(r + "-")), key=len, default=None)
        if rule is not None:
            owner.setdefault((head, rule), []).append(test_id)
    for rule, (path, function, _, count) in cells.items():
        found = owner.get((f"{path}::{function}", rule), [])
        assert len(found) == count, f"row {rule}: claims {count} case(s) of {path}::{function}[{rule}-*], " \
                                    f"pytest collects {len(found)}"
    # each row says what the code enforces and cites the same source
    for rule, spec in [*RULES.items(), *CHAIN_RULES.items()]:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{rule}` |"))
        assert row.split(" | ")[1:4] == [spec.field, spec.text, spec.source], rule
