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
from console.flags import MAX_AGE_SECONDS, seconds
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
    p.add_argument("--trust", choices=("emulator",), action="append", default=[], metavar="emulator",
                   help="also trust this home's nitrodeck emulator test root (implied by choosing the emulator "
                        "backend explicitly, never by its automatic choice; never do this for real enclaves)")
    p.add_argument("--trust-emulator", action="append_const", const="emulator", dest="trust",
                   help="the older spelling of --trust emulator")
    p.add_argument("--max-age", type=float, metavar="SECONDS", help="fail documents older than this")
    p.add_argument("--allow-debug", action="store_true",
                   help="accept a debug-mode document (all-zero PCRs); refused by default")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--backend", choices=("auto", "real", "emulator"), default=argparse.SUPPRESS,
                   help="as the global --backend (accepted after the subcommand too, as sign/attest do); "
                        "choosing the emulator explicitly also trusts its test root")
    p.set_defaults(func=cmd_verify_attestation)

    t = subparsers.add_parser("trust", help="trust roots for attestation documents")
    tsub = t.add_subparsers(dest="trust_command", metavar="WHAT", required=True)
    e = tsub.add_parser("emulator-root", help="print the emulator's test root certificate (PEM)")
    e.add_argument("--fingerprint", action="store_true", help="print its DER SHA-256 fingerprint instead")
    e.set_defaults(func=cmd_trust_emulator_root)


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 (naive means UTC) or integer epoch milliseconds, from 1970 to 9999-12-31 (UTC)."""
    from core.attest.document import MAX_TIMESTAMP_MS

    shown = text if len(text) <= 40 else text[:37] + "..."
    out_of_range = UsageError(f"--at {shown!r} is outside 1970-01-01 .. 9999-12-31 (UTC)", where="--at")
    if re.fullmatch(r"\d{1,20}", text):
        if int(text) > MAX_TIMESTAMP_MS:
            raise out_of_range
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=int(text))
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"--at {shown!r} is neither ISO 8601 nor epoch milliseconds", where="--at") from exc
    try:  # an offset can push the first or last representable day out of range
        value = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    except OverflowError as exc:
        raise out_of_range from exc
    if value.year < 1970:
        raise out_of_range
    return value


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
        if len(text) % 2:
            raise UsageError(f"{path} holds {len(text)} hex digits, an odd number: not a hex-encoded document",
                             where=str(path))
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
    seconds(args.max_age, "--max-age", high=MAX_AGE_SECONDS)
    return Policy(
        pcrs=pcrs,
        nonce=_hex(args.nonce, "--nonce"),
        user_data=_hex(args.user_data, "--user-data"),
        public_key=_hex(args.public_key, "--public-key"),
        max_age=args.max_age,
        allow_debug=bool(args.allow_debug),
    )


def cmd_verify_attestation(args: argparse.Namespace) -> int:
    from console import output
    from core.attest import trust
    from core.attest.verify import verify
    from core.backends.registry import select_backend

    at = parse_time(args.at) if args.at else dt.datetime.now(dt.UTC)
    policy = _policy(args)
    # AWS alone unless the operator asks: --trust-root, --trust emulator, or the emulator backend chosen
    # by name (flag or $NITRODECK_BACKEND). An automatic choice of the emulator (a laptop without
    # nitro-cli) does not widen trust: that is where production documents get checked.
    backend = select_backend(getattr(args, "backend", None))
    choice = trust.choose_roots(
        extra=args.trust_root or [],
        emulator_flag="emulator" in (args.trust or []),
        backend=backend.name,
        backend_chosen_by=backend.chosen_by,
    )
    report = verify(read_document(args.file), at=at, roots=choice.roots, policy=policy)
    if args.json:
        out = report.to_dict()
        out["trusted_roots"] = [r.name for r in choice.roots]
        out["trust"] = choice.to_dict()
        out["at"] = at.isoformat()
        out["file"] = str(args.file)
        output.emit_json(out)
    else:
        facts: list[tuple[str, str]] = []
        if report.document is not None:
            doc = report.document
            facts += [("module_id", doc.module_id), ("timestamp", doc.issued().isoformat())]
        facts.append(("verified at", at.isoformat()))
        facts += [("trusted root", f"{root.name} ({why})") for root, why in zip(choice.roots, choice.reasons, strict=True)]
        facts += [("trust note", note) for note in choice.notes]  # what was not trusted, and how to ask
        print(output.key_values(facts))
        print(output.checklist(report.checks))  # type: ignore[arg-type]
        print("VERIFIED" if report.ok else "NOT VERIFIED")
    return 0 if report.ok else EXIT_FAILED_CHECKS


def cmd_trust_emulator_root(args: argparse.Namespace) -> int:
    from core import home

    if getattr(args, "read_only", False):
        # read-only: print the root if this home has one, never create it (or its lock file)
        import hashlib

        from cryptography.hazmat.primitives import serialization

        from core.attest.trust import emulator_root
        from core.errors import ReadOnlyError

        root = emulator_root()
        if root is None:
            raise ReadOnlyError(
                "this home has no emulator root yet, and making one is a change: nitrodeck runs read-only",
                where="trust emulator-root",
                hint="run it once without --read-only (or launch an enclave under the emulator)",
            )
        der = root.cert.public_bytes(serialization.Encoding.DER)
        if args.fingerprint:
            print(hashlib.sha256(der).hexdigest().upper())
        else:
            print(root.cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), end="")
        return 0
    from emulator.pki import EmulatorPki

    pki = EmulatorPki.load_or_create(home.emulator_etc())
    if args.fingerprint:
        print(pki.root_fingerprint())
    else:
        print(pki.root_pem().decode("ascii"), end="")
    return 0
