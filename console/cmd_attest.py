"""Headless attestation commands: `verify-attestation` and `trust emulator-root`."""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from console.argtypes import abs_path
from core.errors import UsageError
from core.files import read_limited

EXIT_FAILED_CHECKS = 3
MAX_JSON_FILE = 1024 * 1024


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "verify-attestation",
        help="verify an attestation document: signature, chain to a pinned root, PCRs, nonce, age",
        description="Verify a Nitro attestation document (raw COSE_Sign1, or hex/base64 of it). "
        "Exit 0 when every check passes, 3 when any fails.",
    )
    p.add_argument("file", type=abs_path, metavar="FILE", help="the attestation document (CBOR, base64 or hex)")
    p.add_argument("--at", metavar="TIME", help="verify at this time: ISO 8601 or epoch milliseconds (default now)")
    p.add_argument("--expect-pcrs", type=abs_path, metavar="FILE",
                   help='JSON {"PCR0": hex, ...} or describe-eif/build output with "Measurements"')
    p.add_argument("--nonce", metavar="HEX", help="the nonce the document must carry")
    p.add_argument("--user-data", metavar="HEX", help="the user data the document must carry")
    p.add_argument("--public-key", metavar="HEX", help="the public key the document must carry")
    p.add_argument("--trust-root", type=abs_path, action="append", metavar="PEM",
                   help="also trust this root certificate (repeatable); the AWS root is always trusted")
    p.add_argument("--trust-emulator", action="store_true",
                   help="also trust this home's nitrodeck emulator test root (automatic when the emulator backend "
                        "is active; never do this for real enclaves)")
    p.add_argument("--max-age", type=float, metavar="SECONDS", help="fail documents older than this")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify_attestation)

    t = subparsers.add_parser("trust", help="trust roots for attestation documents")
    tsub = t.add_subparsers(dest="trust_command", metavar="WHAT", required=True)
    e = tsub.add_parser("emulator-root", help="print the emulator's test root certificate (PEM)")
    e.add_argument("--fingerprint", action="store_true", help="print its DER SHA-256 fingerprint instead")
    e.set_defaults(func=cmd_trust_emulator_root)


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 (naive means UTC) or integer epoch milliseconds."""
    if re.fullmatch(r"\d{1,16}", text):
        return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC)
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"--at {text!r} is neither ISO 8601 nor epoch milliseconds", where="--at") from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _hex(text: str | None, flag: str) -> bytes | None:
    if text is None:
        return None
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError as exc:
        raise UsageError(f"{flag} is not hex", where=flag) from exc


def read_document(path: Path) -> bytes:
    """Raw CBOR as is; a text file holding hex or base64 of the document is decoded."""
    from core.attest.document import MAX_DOCUMENT

    # text encodings take up to 2x the bytes; the decoded document is limited again by the parser
    data = read_limited(path, 2 * MAX_DOCUMENT + 64)
    if data[:1] in (b"\x84", b"\xd2"):
        return data
    text = data.strip()
    if re.fullmatch(rb"[0-9a-fA-F]+", text or b"-"):
        return binascii.unhexlify(text)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return data  # not text: let the parser say what is wrong with it


def _policy(args: argparse.Namespace) -> Any:
    from core.attest.verify import Policy, pcrs_from_json

    pcrs: dict[int, str] = {}
    if args.expect_pcrs is not None:
        raw = read_limited(args.expect_pcrs, MAX_JSON_FILE)
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"not JSON: {exc}", where=str(args.expect_pcrs)) from exc
        pcrs = pcrs_from_json(data, where=str(args.expect_pcrs))
    if args.max_age is not None and args.max_age < 0:
        raise UsageError("--max-age must not be negative", where="--max-age")
    return Policy(
        pcrs=pcrs,
        nonce=_hex(args.nonce, "--nonce"),
        user_data=_hex(args.user_data, "--user-data"),
        public_key=_hex(args.public_key, "--public-key"),
        max_age=args.max_age,
    )


def cmd_verify_attestation(args: argparse.Namespace) -> int:
    from console import output
    from core.attest import trust
    from core.attest.verify import verify

    at = parse_time(args.at) if args.at else dt.datetime.now(dt.UTC)
    policy = _policy(args)
    roots = trust.default_roots() + [trust.load_root_pem(p) for p in (args.trust_root or [])]
    # The emulator's root is trusted only while the emulator backend is active (or when asked): on a
    # real parent instance (backend auto -> real) an emulator-made document never passes.
    from core.backends.registry import select_backend

    trust_emulator = bool(args.trust_emulator) or select_backend(getattr(args, "backend", None)).is_emulator
    report = verify(read_document(args.file), at=at, roots=roots, trust_emulator=trust_emulator, policy=policy)
    if args.json:
        out = report.to_dict()
        emulator = trust.emulator_root() if trust_emulator else None
        out["trusted_roots"] = [r.name for r in roots] + ([emulator.name] if emulator else [])
        out["at"] = at.isoformat()
        out["file"] = str(args.file)
        output.emit_json(out)
    else:
        if report.document is not None:
            doc = report.document
            issued = dt.datetime.fromtimestamp(doc.timestamp / 1000, dt.UTC)
            print(output.key_values([("module_id", doc.module_id), ("timestamp", issued.isoformat()),
                                     ("verified at", at.isoformat())]))
        print(output.checklist(report.checks))  # type: ignore[arg-type]
        print("VERIFIED" if report.ok else "NOT VERIFIED")
    return 0 if report.ok else EXIT_FAILED_CHECKS


def cmd_trust_emulator_root(args: argparse.Namespace) -> int:
    from core import home
    from emulator.pki import EmulatorPki

    pki = EmulatorPki.load_or_create(home.emulator_etc())
    if args.fingerprint:
        print(pki.root_fingerprint())
    else:
        print(pki.root_pem().decode("ascii"), end="")
    return 0
