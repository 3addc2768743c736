"""`nitrodeck sign`, `attest` and `bridge`: prove a running enclave, and expose its API over TCP.

sign and attest only read enclave state (they talk to the payload, they change nothing), so they
work in read-only mode. Exit status 3 means the enclave answered but a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterable
from typing import Any

from console.argtypes import resolve_path
from console.cmd_lifecycle import make_lifecycle
from console.flags import MAX_TIMEOUT_SECONDS, seconds
from console.output import emit_json, key_values, progress
from core.attest.verify import pcrs_from_json
from core.backends.registry import CHOICES, select_backend
from core.channel.bridge import Bridge, parse_host_port, run_until_signalled
from core.checks import Check
from core.errors import InputTooLarge, UsageError
from core.files import read_limited
from core.ops.testsign import MAX_NONCE, MAX_PAYLOAD, PAYLOAD_PORT, SCHEMES, attest, test_sign
from core.text import safe_text

CHECK_FAILED = 3
MAX_PCR_FILE = 64 * 1024


def read_payload(value: str) -> bytes:
    """``TEXT`` (UTF-8) or ``@FILE`` (raw bytes)."""
    if value.startswith("@"):
        return read_limited(value[1:], MAX_PAYLOAD, "--payload")
    data = value.encode()
    if len(data) > MAX_PAYLOAD:
        raise InputTooLarge(
            f"the payload is {len(data)} bytes; the limit is {MAX_PAYLOAD}", where="--payload"
        )
    return data


def read_expected_pcrs(path: str | None) -> dict[int, str] | None:
    """``{"PCR0": hex, ...}`` or describe-eif / build output; None when no file was given."""
    if path is None:
        return None
    raw = read_limited(path, MAX_PCR_FILE, "--expect-pcrs")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not JSON: {exc}", where="--expect-pcrs") from exc
    return pcrs_from_json(data, where=f"--expect-pcrs {path}")


def parse_nonce(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        nonce = bytes.fromhex(text)
    except ValueError as exc:
        raise UsageError("the nonce must be hex", where="--nonce") from exc
    if not 0 < len(nonce) <= MAX_NONCE:
        raise UsageError(f"the nonce must be 1..{MAX_NONCE} bytes", where="--nonce")
    return nonce


def check_lines(checks: Iterable[Check]) -> str:
    lines = []
    for check in checks:
        mark = "–" if check.ok is None else ("✓" if check.ok else "✗")
        lines.append(f"{mark} {safe_text(check.name)}" + (f": {safe_text(check.detail)}" if check.detail else ""))
    return "\n".join(lines)


def _finish(report: Any, args: argparse.Namespace, facts: list[tuple[str, Any]]) -> int:
    facts = facts + [("trusted root", line) for line in report.trusted_roots]
    if args.json:
        emit_json(report.to_dict())
    else:
        print(key_values(facts))
        print()
        print(check_lines(report.checks))
        print()
        print("OK: every check passed" if report.ok else "FAILED: see the ✗ lines above")
    return 0 if report.ok else CHECK_FAILED


def cmd_sign(args: argparse.Namespace) -> int:
    seconds(args.timeout, "--timeout", high=MAX_TIMEOUT_SECONDS, allow_zero=False)
    payload = read_payload(args.payload)
    expected = read_expected_pcrs(args.expect_pcrs)
    lifecycle = make_lifecycle(args, echo_commands=False)
    report = test_sign(
        lifecycle,
        args.enclave,
        payload,
        args.scheme,
        expected_pcrs=expected,
        via=args.via,
        timeout=args.timeout,
    )
    facts = [
        ("enclave", f"{report.enclave_id} (CID {report.cid})"),
        ("via", report.via),
        ("scheme", report.scheme),
        ("payload sha256", report.payload_sha256),
        ("nonce", report.nonce),
        ("public key", report.public_key),
        ("signature", report.signature),
    ]
    return _finish(report, args, facts)


def cmd_attest(args: argparse.Namespace) -> int:
    seconds(args.timeout, "--timeout", high=MAX_TIMEOUT_SECONDS, allow_zero=False)
    expected = read_expected_pcrs(args.expect_pcrs)
    nonce = parse_nonce(args.nonce)
    lifecycle = make_lifecycle(args, echo_commands=False)
    report = attest(
        lifecycle, args.enclave, nonce=nonce, expected_pcrs=expected, via=args.via, timeout=args.timeout
    )
    facts: list[tuple[str, Any]] = [
        ("enclave", f"{report.enclave_id} (CID {report.cid})"),
        ("via", report.via),
        ("module id", report.module_id),
        ("nonce", report.nonce),
    ]
    facts += [(f"PCR{i}", v) for i, v in sorted(report.pcrs.items()) if i in (0, 1, 2, 3, 4, 8)]
    return _finish(report, args, facts)


def cmd_bridge(args: argparse.Namespace) -> int:
    seconds(args.deadline, "--deadline", high=MAX_TIMEOUT_SECONDS)
    listen = parse_host_port(args.listen)
    if not 0 < args.cid < 2**32 or not 0 < args.port < 2**32:
        raise UsageError("--cid and --port must be positive 32-bit numbers", where="bridge")
    transport = select_backend(getattr(args, "backend", None)).transport()
    bridge = Bridge(
        listen, args.cid, args.port, transport, allow_non_loopback=args.allow_non_loopback, log=progress
    )
    cut = asyncio.run(run_until_signalled(bridge, deadline=args.deadline))
    return 0 if cut == 0 else 1


def _common(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    if json_flag:
        p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--backend", choices=CHOICES, default=argparse.SUPPRESS,
                   help="nitro-cli backend (also accepted before the subcommand)")
    p.add_argument("--read-only", action="store_true", default=argparse.SUPPRESS,
                   help="refuse every mutating action (also accepted before the subcommand)")


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("enclave", metavar="ENCLAVE", help="enclave ID or name")
    p.add_argument(
        "--expect-pcrs", metavar="FILE", type=resolve_path,
        help="expected PCRs (JSON); default: the enclave's measurements",
    )
    p.add_argument(
        "--via", metavar="HOST:PORT", help="reach the payload through a TCP bridge instead of vsock"
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="per-call timeout (default 30)"
    )


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sign", help="test-sign: the enclave signs a payload; verify signature and attestation"
    )
    _target(p)
    p.add_argument(
        "--payload", required=True, metavar="TEXT|@FILE", help="text to sign, or @FILE (max 64 KiB)"
    )
    p.add_argument("--scheme", choices=SCHEMES, default="secp256k1", help="signature scheme (default secp256k1)")
    _common(p)
    p.set_defaults(func=cmd_sign)

    p = subparsers.add_parser("attest", help="fetch and verify an attestation document with a fresh nonce")
    _target(p)
    p.add_argument("--nonce", metavar="HEX", help="nonce to send (default: 32 random bytes)")
    _common(p)
    p.set_defaults(func=cmd_attest)

    p = subparsers.add_parser("bridge", help="TCP -> vsock bridge to an enclave (the socat sidecar)")
    p.add_argument("--listen", default="127.0.0.1:8888", metavar="HOST:PORT", help="default 127.0.0.1:8888")
    p.add_argument("--cid", type=int, required=True, help="the enclave's CID")
    p.add_argument("--port", type=int, default=PAYLOAD_PORT, help=f"vsock port (default {PAYLOAD_PORT})")
    p.add_argument(
        "--allow-non-loopback", action="store_true", help="allow listening on a non-loopback address"
    )
    p.add_argument("--deadline", type=float, default=5.0, help="seconds in-flight connections get on stop")
    _common(p, json_flag=False)
    p.set_defaults(func=cmd_bridge)
