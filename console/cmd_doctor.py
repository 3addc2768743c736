"""`nitrodeck doctor [--json] [--fix-hints]`: is this host ready to run enclaves? Exit 0 when no check fails."""

from __future__ import annotations

import argparse

from console.output import emit_json, table
from core.ops.doctor import FAIL, PROBE_TIMEOUT, DoctorReport

MARKS = {"ok": "[ok]  ", "warn": "[warn]", "fail": "[FAIL]"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "doctor",
        help="check every precondition of running enclaves on this host (exit 1 when a check fails)",
    )
    p.add_argument("--json", action="store_true", help="the report as JSON (every check, with its fix)")
    p.add_argument("--fix-hints", action="store_true", help="print the command that fixes each warning and failure")
    p.add_argument(
        "--metadata-url",
        default=None,
        help="the only metadata endpoint to probe (default: $NITRODECK_METADATA_URL, "
        "$ECS_CONTAINER_METADATA_URI_V4, else IMDS on a Nitro parent); its Date header is the clock's reference",
    )
    p.add_argument(
        "--time-url",
        default=None,
        help="a second clock reference when the metadata endpoint gives none (its Date header; "
        "default: the region's KMS endpoint on a Nitro parent, the local KMS on the emulator)",
    )
    p.add_argument("--timeout", type=float, default=PROBE_TIMEOUT, metavar="SECONDS", help="per probe")
    p.set_defaults(func=_cmd_doctor)


def render(report: DoctorReport, fix_hints: bool) -> str:
    lines = []
    for c in report.checks:
        lines.append(f"{MARKS[c.status]} {c.title}: {c.found}")
        if fix_hints and c.fix:
            lines.append(f"       fix: {c.fix}")
    counts = {s: sum(1 for c in report.checks if c.status == s) for s in MARKS}
    lines.append("")
    lines.append(f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failing ({report.backend})")
    if not fix_hints and any(c.fix for c in report.checks):
        lines.append("run with --fix-hints for the commands that fix them")
    return "\n".join(lines)


def fix_table(report: DoctorReport) -> str:
    return table([(c.id, c.status, c.fix) for c in report.checks if c.fix], ("check", "status", "fix"))


def _cmd_doctor(args: argparse.Namespace) -> int:
    from console.doctor_inputs import doctor_inputs
    from core.backends.real import read_only_reason
    from core.backends.registry import select_backend
    from core.errors import UsageError
    from core.ops.doctor import run_doctor

    if not 0.1 <= args.timeout <= 30:
        raise UsageError("--timeout must be between 0.1 and 30 seconds", where="--timeout")
    backend = select_backend(getattr(args, "backend", None))
    # --read-only or NITRODECK_READ_ONLY: the checks write nothing (the emulator's model is not created)
    reason = read_only_reason(backend, bool(getattr(args, "read_only", False)))
    read_only = reason is not None and reason.refuses_everything
    report = run_doctor(doctor_inputs(backend, args.metadata_url, args.timeout, args.time_url, read_only=read_only))
    if args.json:
        emit_json(report.to_dict())
    else:
        print(render(report, args.fix_hints))
    return 1 if any(c.status == FAIL for c in report.checks) else 0
