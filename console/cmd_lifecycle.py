"""Headless lifecycle commands: status, describe, build, describe-eif, launch, terminate, console.

Every command talks to :class:`core.ops.lifecycle.Lifecycle`, the same layer the TUI uses, so read-only
and the audit log apply here too. ``--json`` output shapes are documented in docs/cli-json.md and
always carry ``"backend"``. In human mode the exact nitro-cli/nitro-emu command lines go to stderr.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from console import compat
from console.argtypes import key_or_path, resolve_path
from console.output import emit_json, key_values, progress, section, table, to_jsonable
from console.wiring import payload_factory
from core import home
from core.backends.driver import CommandRecord
from core.backends.registry import CHOICES, select_backend
from core.errors import NitrodeckError, UsageError
from core.models import BuildRequest, EifInfo, EnclaveInfo, LaunchRequest, RunInfo, TerminateInfo
from core.ops.lifecycle import EnclaveNotFound, Lifecycle, Status
from core.text import safe_text

_MAX_LOG_PRINT = 16 * 1024 * 1024
#: status lists the exits of this many hours back
EXITED_WINDOW_HOURS = 24


# --- shared with other cmd_* modules -------------------------------------------------------------------


def make_lifecycle(args: argparse.Namespace, *, echo_commands: bool | None = None) -> Lifecycle:
    """The Lifecycle a subcommand should use: --backend, --read-only (or auto read-only on Nitro)."""
    backend = select_backend(getattr(args, "backend", None))
    # the flag, $NITRODECK_READ_ONLY, or (on Nitro) a missing/unwritable device: each says why
    reason = Lifecycle.reason_for(backend, bool(getattr(args, "read_only", False)))
    echo = not getattr(args, "json", False) if echo_commands is None else echo_commands

    def show(record: CommandRecord) -> None:
        progress(f"$ {record.command}" + ("" if record.ok else f"  (failed: {record.error_code})"))

    def warn(text: str) -> None:
        progress(f"warning: {text}")

    return Lifecycle(
        backend, read_only_reason=reason, on_command=show if echo else None, payload=payload_factory, on_warning=warn
    )


def judgement_json(judgement: Any) -> dict[str, Any]:
    """What a verdict compared with (core.ops.expected.Judgement): how its pin was found and the pinned
    PCRs, in nitro-cli's Measurements shape; {} without a pin."""
    if judgement is None or judgement.pin is None:
        return {}
    pcrs = {f"PCR{index}": value for index, value in sorted(judgement.pin.pcrs.items())}
    return {"ExpectedPCRsPinnedBy": judgement.by, "ExpectedMeasurements": pcrs}


def exited_json(lc: Lifecycle, event: Any) -> dict[str, Any]:
    """An ``exited`` journal event as `status --json` and the agent's /status list it: the event, with the
    verdict of the enclave against the pin of its EIF (kept after the exit) and which pin that was."""
    from core.ops.journal import enclave_from_event

    row: dict[str, Any] = event.to_json()
    enclave = enclave_from_event(event)
    if enclave is not None:
        with contextlib.suppress(NitrodeckError):
            judgement = lc.judge(enclave, record=False)
            row.update(ExpectedPCRs=judgement.verdict, ExpectedPCRsPin=judgement.key, **judgement_json(judgement))
    return row


def enclave_json(
    e: EnclaveInfo, verdict: str | None = None, pin: str | None = None, *, judgement: Any = None,
    started_at: str | None = None,
) -> dict[str, Any]:
    """nitro-cli's describe-enclaves element shape (plus nitrodeck's ExpectedPCRs verdict, the pin it
    compared with, and, from the agent, when the enclave started)."""
    out: dict[str, Any] = {}
    if e.name is not None:
        out["EnclaveName"] = e.name
    out.update(
        EnclaveID=e.enclave_id,
        ProcessID=e.process_id,
        EnclaveCID=e.cid,
        NumberOfCPUs=e.cpu_count,
        CPUIDs=e.cpu_ids,
        MemoryMiB=e.memory_mib,
        State=e.state,
        Flags=e.flags,
    )
    if e.measurements is not None:
        out["Measurements"] = e.measurements.as_dict()
    for key, value in (("ImageName", e.image_name), ("ImageVersion", e.image_version), ("Metadata", e.metadata)):
        if value is not None:
            out[key] = value
    if verdict is not None:
        out["ExpectedPCRs"] = verdict
        out["ExpectedPCRsPin"] = pin
        out.update(judgement_json(judgement))
    if started_at is not None:
        out["StartedAt"] = started_at
    return out


def run_json(r: RunInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"EnclaveName": r.name} if r.name is not None else {}
    out.update(EnclaveID=r.enclave_id, ProcessID=r.process_id, EnclaveCID=r.cid, NumberOfCPUs=r.cpu_count,
               CPUIDs=r.cpu_ids, MemoryMiB=r.memory_mib)
    return out


def terminate_json(t: TerminateInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"EnclaveName": t.name} if t.name is not None else {}
    out.update(EnclaveID=t.enclave_id, Terminated=t.terminated)
    return out


def eif_json(info: EifInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"EifVersion": info.version, "Measurements": info.measurements.as_dict(),
                           "IsSigned": info.is_signed}
    if info.signing_certificate is not None:
        out["SigningCertificate"] = info.signing_certificate
    out["CheckCRC"] = info.check_crc
    if info.signature_check is not None:
        out["SignatureCheck"] = info.signature_check
    for key, value in (("ImageName", info.image_name), ("ImageVersion", info.image_version),
                       ("Metadata", info.metadata)):
        if value is not None:
            out[key] = value
    return out


def status_json(
    st: Status, verdicts: dict[str, str], pins: dict[str, str | None] | None = None,
    exited: list[dict[str, Any]] | None = None, journal: dict[str, Any] | None = None,
    *, judgements: dict[str, Any] | None = None, started: dict[str, str] | None = None,
) -> dict[str, Any]:
    res = st.resources
    pins = pins or {}
    judgements = judgements or {}
    started = started or {}
    return {
        "backend": st.backend,
        "backend_display": st.backend_display,
        "read_only": st.read_only,
        "read_only_reason": (
            {"kind": st.read_only_reason.kind, "detail": st.read_only_reason.detail, "hint": st.read_only_reason.hint}
            if st.read_only_reason else None
        ),
        "driver_loaded": st.resources.driver_loaded,
        "warnings": list(st.warnings),
        "instance_id": st.instance_id,
        "taken_at": st.taken_at,
        "enclaves": [
            enclave_json(e, verdicts.get(e.enclave_id), pins.get(e.enclave_id), judgement=judgements.get(e.enclave_id),
                         started_at=started.get(e.enclave_id))
            for e in st.enclaves
        ],
        "exited": exited or [],
        "journal": journal or {},
        "cpu_pool": {"source": res.cpus.source, "pool": res.cpus.pool, "free": res.cpus.free, "held": res.cpus.held},
        "hugepages": [
            {"size_kb": p.size_kb, "node": p.node, "total": p.total, "free": p.free,
             "held_by_enclaves": p.held_by_enclaves, "source": p.source}
            for p in res.hugepages
        ],
        "host": {"cpu_percent": res.host.cpu_percent, "mem_total": res.host.mem_total,
                 "mem_used": res.host.mem_used},
        "allocator_error": res.problem,
    }


# --- human output ----------------------------------------------------------------------------------------


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


def _size(kb: int) -> str:
    return f"{kb // (1024 * 1024)}G" if kb >= 1024 * 1024 else f"{kb // 1024}M"


def enclaves_table(enclaves: list[EnclaveInfo], verdicts: dict[str, str] | None = None) -> str:
    with_image = any(e.image_name for e in enclaves)  # describe --metadata
    rows = []
    for e in enclaves:
        pcr0 = e.measurements.pcr0[:16] + "…" if e.measurements else None
        row = [e.name, e.enclave_id, e.state, "debug" if e.debug_mode else "-", e.cid, e.cpu_ids,
               f"{e.memory_mib} MiB", pcr0]
        if with_image:
            row.append(f"{e.image_name or '-'} {(e.image_version or '')[:12]}".strip())
        if verdicts is not None:
            row.append(verdicts.get(e.enclave_id))
        rows.append(row)
    headers = ["NAME", "ID", "STATE", "DEBUG", "CID", "CPUS", "MEMORY", "PCR0"]
    if with_image:
        headers.append("IMAGE")
    if verdicts is not None:
        headers.append("PCRS")
    return table(rows, headers, empty="(no enclaves running)")


def status_text(st: Status, verdicts: dict[str, str], chosen_by: str) -> str:
    res = st.resources
    head = key_values([
        ("backend", f"{st.backend_display} ({st.backend}, {chosen_by})"),
        # the emulator makes its instance on first use; read-only, a world never used has none yet
        ("instance", st.instance_id or ("none yet" if st.backend == "emulator" else "unknown")),
        ("read-only", f"yes: {st.read_only_reason.detail.removeprefix('read-only: ')}" if st.read_only_reason
         else st.read_only),
        *([("  refuses", ("every change" if st.read_only_reason.refuses_everything else "launch and terminate")
            + f" (to change it: {st.read_only_reason.hint})")] if st.read_only_reason else []),
        ("taken at", st.taken_at),
        *[("warning", w) for w in st.warnings],
    ])
    names = {e.enclave_id: e.label for e in st.enclaves}
    pool = key_values([("pool", res.cpus.pool or "(empty)"), ("free", res.cpus.free or "(none)")]
                      + ([("driver" if res.driver_loaded is False else "allocator", res.problem)]
                         if res.problem else []))
    held = table([[names.get(k, k), v] for k, v in res.cpus.held.items()], ["ENCLAVE", "CPUS"],
                 empty="(no CPUs held)")
    pages = table(
        [[_size(p.size_kb), "-" if p.node is None else p.node, p.total, p.free, p.held_by_enclaves,
          f"{p.free_mib}/{p.total_mib} MiB"] for p in res.hugepages],
        ["SIZE", "NODE", "TOTAL", "FREE", "HELD", "FREE/TOTAL"],
        empty="(no hugepages configured)",
    )
    host = key_values([
        ("cpu", f"{res.host.cpu_percent:.1f} %"),
        ("memory", f"{_gib(res.host.mem_used)} used of {_gib(res.host.mem_total)}"),
    ])
    return "\n\n".join([
        head,
        section(f"Enclaves ({len(st.enclaves)})", enclaves_table(st.enclaves, verdicts)),
        section(f"CPU pool ({res.cpus.source})", pool + "\n" + held),
        section(f"Hugepages ({res.hugepages[0].source if res.hugepages else res.cpus.source})", pages),
        section("Host", host),
    ])


def _measurements_text(m: dict[str, str]) -> str:
    return key_values([(k, v) for k, v in m.items() if k != "HashAlgorithm"])


# --- handlers ------------------------------------------------------------------------------------------------


def _prime_host_cpu() -> None:
    """psutil's first CPU sample is meaningless (0.0): start the interval now, so the sample
    taken inside status() covers the time status spends asking the backend."""
    import psutil

    psutil.cpu_percent(interval=None)


def cmd_status(args: argparse.Namespace) -> int:
    lc = make_lifecycle(args, echo_commands=False)
    _prime_host_cpu()
    watch = getattr(args, "watch", None)
    if watch is None:
        _print_status(lc, "json" if args.json else "text")
        return 0
    # --watch: JSON Lines (one object per interval); on a terminal the text is redrawn in place.
    # A launch, exit or terminate (the kernel tells core.ops.watch) prints at once, without waiting
    # for the interval to end.
    from core.ops.watch import DirWatcher

    mode = "jsonl" if args.json else ("frame" if sys.stdout.isatty() else "texts")
    with DirWatcher(lc.backend.watch_dirs()) as watcher:
        try:
            while True:
                started = time.monotonic()
                _print_status(lc, mode)
                while (left := watch - (time.monotonic() - started)) > 0:
                    if watcher.wait(left):
                        break
        except KeyboardInterrupt:
            return 0


def _print_status(lc: Lifecycle, mode: str) -> None:
    st = lc.status()
    judged = {e.enclave_id: lc.judge(e) for e in st.enclaves}
    verdicts: dict[str, str] = {k: j.verdict for k, j in judged.items()}
    pins = {k: j.key for k, j in judged.items()}
    since = datetime.now(UTC) - timedelta(hours=EXITED_WINDOW_HOURS)
    exited = [exited_json(lc, event) for _, event in lc.exited(since=since)]
    st.warnings.extend(lc.expected.problem_lines())  # a broken pin file judged nothing: say which
    journal = {"path": str(lc.journal.path), "warnings": list(lc.journal.warnings)}
    if mode == "json":
        emit_json(status_json(st, verdicts, pins, exited, journal, judgements=judged))
    elif mode == "jsonl":
        print(json.dumps(to_jsonable(status_json(st, verdicts, pins, exited, journal, judgements=judged)),
                         ensure_ascii=False), flush=True)
    elif mode == "frame":
        # home, the text with each line's leftovers erased, then clear what a longer frame left below
        text = status_text(st, verdicts, lc.backend.chosen_by) + _exited_text(exited)
        sys.stdout.write("\x1b[H" + text.replace("\n", "\x1b[K\n") + "\x1b[K\n\x1b[J")
        sys.stdout.flush()
    else:
        # "texts": one report after another (a log, a pipe), a blank line between them
        text = status_text(st, verdicts, lc.backend.chosen_by) + _exited_text(exited)
        print(text + ("\n" if mode == "texts" else ""), flush=True)


def _verdict_text(row: dict[str, Any]) -> str:
    """``match (pin payments)``: an exited enclave's verdict and the pin it was compared with."""
    verdict = row.get("ExpectedPCRs") or "-"
    return f"{verdict} (pin {row['ExpectedPCRsPin']})" if row.get("ExpectedPCRsPin") else str(verdict)


def _exited_text(exited: list[dict[str, Any]]) -> str:
    if not exited:
        return ""
    return "\n\n" + section(f"Exited in the last {EXITED_WINDOW_HOURS} h ({len(exited)})", table(
        # when it ended (the backend's ended_at), not when the exit was noticed, when the backend knows
        [[e["name"], e["enclave_id"], e.get("ended_at") or e["time"], f"{e.get('uptime_s')} s", e.get("exit_status"),
          _verdict_text(e)] for e in exited],
        ["NAME", "ID", "EXITED", "UPTIME", "STATUS", "PCRS"],
    ))


def cmd_describe(args: argparse.Namespace) -> int:
    lc = make_lifecycle(args)
    enclaves, warnings = lc.describe_report(metadata=args.metadata)
    for warning in warnings:
        progress(f"warning: {warning}")
    if args.json:
        # nitro-cli's describe-enclaves array, so `nitrodeck describe --json | jq '.[0]'` works;
        # the backend is in `status --json`; warnings (a partial answer) went to stderr above
        emit_json([enclave_json(e) for e in enclaves])
    else:
        print(enclaves_table(enclaves))
    return 0


def cmd_describe_eif(args: argparse.Namespace) -> int:
    if args.eif is None and args.eif_path is None or args.eif and args.eif_path:
        raise UsageError("give the EIF as an argument (nitrodeck's view) or with --eif-path (nitro-cli's JSON)",
                         where="describe-eif")
    if args.eif_path and not args.json:
        return compat.run(args, "describe-eif")  # spelled the nitro-cli way: print what nitro-cli prints
    path = args.eif or args.eif_path
    lc = make_lifecycle(args)
    info = lc.describe_eif(path)
    if args.json:
        emit_json({"backend": lc.backend.name, **eif_json(info)})
        return 0
    print(key_values([
        ("file", path),
        ("EIF version", info.version),
        ("image", f"{info.image_name or '-'} {info.image_version or ''}".strip()),
        ("signed", info.is_signed),
        ("signature ok", info.signature_check),
        ("CRC ok", info.check_crc),
    ]))
    print(_measurements_text(info.measurements.as_dict()))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    output = args.output_file
    if output is None:
        if not args.payload:
            raise UsageError("--output-file is required", where="build")
        output = str(home.eif_library() / "nitrodeck-payload.eif")
    req = BuildRequest(
        output_file=output,
        docker_uri=args.docker_uri,
        docker_dir=args.docker_dir,
        rootfs=args.rootfs,
        cmd=args.cmd,
        env=list(args.env or []),
        image_tar=args.image_tar,
        signing_certificate=args.signing_certificate,
        private_key=args.private_key,
        name=args.name,
        version=args.version,
        metadata=args.metadata,
        payload=args.payload,
        build_time=args.build_time,
    )
    if args.payload and (req.rootfs or req.image_tar or req.docker_dir):
        raise UsageError(
            "--payload builds the nitrodeck payload; it takes no other image source "
            "(with --docker-uri TAG it is built as that Docker image first)",
            where="build",
        )
    lc = make_lifecycle(args)
    result = lc.build(req)
    if args.json:
        emit_json({"backend": lc.backend.name, "output_file": result.output_file,
                   "Measurements": result.measurements.as_dict()})
    else:
        print(f"built {result.output_file}")
        print(_measurements_text(result.measurements.as_dict()))
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    flags = [args.eif_path, args.memory, args.cpu_count, args.cpu_ids, args.cid, args.name, args.debug_mode or None]
    if args.config is not None:
        # nitro-cli: --config goes with no other run-enclave flag but --attach-console
        if any(v is not None for v in flags):
            raise UsageError("--config takes no other launch flag but --attach-console", where="launch --config")
        from console.launch_config import read_launch_config

        config = read_launch_config(args.config)
        req = config.request
        args.attach_console = args.attach_console or config.attach_console
    else:
        if args.eif_path is None or args.memory is None or (args.cpu_count is None and not args.cpu_ids):
            raise UsageError("give --eif-path, --memory and --cpu-count or --cpu-ids (or --config FILE)",
                             where="launch")
        req = LaunchRequest(
            eif_path=args.eif_path,
            memory_mib=args.memory,
            cpu_count=args.cpu_count,
            cpu_ids=args.cpu_ids,
            cid=args.cid,
            debug_mode=args.debug_mode or args.attach_console,  # nitro-cli: attaching implies debug mode
            name=args.name,
        )
    lc = make_lifecycle(args)
    info = lc.launch(req)
    if args.json:
        emit_json({"backend": lc.backend.name, **run_json(info)})
    else:
        print(key_values([
            ("enclave", info.enclave_id), ("name", info.name), ("CID", info.cid), ("CPUs", info.cpu_ids),
            ("memory", f"{info.memory_mib} MiB"), ("process", info.process_id),
        ]), flush=True)
    if args.attach_console:
        _stream_console(lc, info.enclave_id, None, args.json)
    return 0


def _which_enclave(args: argparse.Namespace, where: str) -> str | None:
    """The positional ENCLAVE or nitro-cli's --enclave-id / --enclave-name (at most one of them)."""
    given = [v for v in (args.enclave, args.enclave_id, args.enclave_name) if v]
    if len(given) > 1:
        raise UsageError("give the enclave once: ENCLAVE, --enclave-id or --enclave-name", where=where)
    return given[0] if given else None


def cmd_terminate(args: argparse.Namespace) -> int:
    args.enclave = _which_enclave(args, "terminate")
    if bool(args.enclave) == bool(args.all):
        raise UsageError("give an enclave ID or name, or --all", where="terminate")
    lc = make_lifecycle(args)
    done = lc.terminate_all() if args.all else [lc.terminate(args.enclave)]
    if args.json:
        emit_json({"backend": lc.backend.name, "terminated": [terminate_json(t) for t in done]})
    else:
        print(table([[t.name, t.enclave_id, t.terminated] for t in done], ["NAME", "ID", "TERMINATED"],
                    empty="(no enclaves were running)"))
    return 0


def _print_log(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size > _MAX_LOG_PRINT:
            fh.seek(size - _MAX_LOG_PRINT)
            progress(f"(showing the last {_MAX_LOG_PRINT // (1024 * 1024)} MiB of {path})")
        # the enclave wrote these bytes: shown with its control characters escaped (core.text)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while chunk := fh.read(1024 * 1024):
            sys.stdout.write(safe_text(decoder.decode(chunk), multiline=True))
        sys.stdout.write(safe_text(decoder.decode(b"", final=True), multiline=True))
    sys.stdout.flush()


def cmd_console(args: argparse.Namespace) -> int:
    if args.enclave is None and not args.log and not args.json and (args.enclave_id or args.enclave_name):
        # nitro-cli's spelling: nitro-cli's output (its "Connecting to the console..." preamble included)
        if args.enclave_id and args.enclave_name:
            raise UsageError("give one of --enclave-id or --enclave-name", where="console")
        return compat.run(args, "console")
    args.enclave = _which_enclave(args, "console")
    if args.enclave is None:
        raise UsageError("give an enclave ID or name", where="console")
    lc = make_lifecycle(args)
    if args.log:
        # The enclave may be gone already: then the journal knows its ID by name.
        try:
            enclave_id = lc.find(args.enclave).enclave_id
        except EnclaveNotFound:
            enclave_id = args.enclave
            known = [e for e in lc.journal.read(enclave=args.enclave) if e.enclave_id]
            if known:
                enclave_id = known[-1].enclave_id or enclave_id
        path = lc.console_log(enclave_id)
        if path is None:
            raise UsageError(f"no kept console log for {enclave_id!r}", where="console --log",
                             hint="logs are kept per enclave ID; see `nitrodeck describe`")
        if args.json:
            text = path.read_bytes()[-_MAX_LOG_PRINT:].decode("utf-8", "replace")
            emit_json({"backend": lc.backend.name, "enclave_id": enclave_id, "log_path": str(path),
                       "lines": text.splitlines()})
        else:
            _print_log(path)
        return 0

    _stream_console(lc, args.enclave, args.disconnect_timeout, args.json)
    return 0


def _stream_console(lc: Lifecycle, enclave: str, disconnect_timeout: float | None, as_json: bool) -> None:
    async def stream() -> None:
        # aclosing: a reader that went away (`| head`) stops the console reader here, inside the loop,
        # instead of leaving its pipes to be closed by a dying event loop (that printed a traceback)
        async with contextlib.aclosing(lc.console(enclave, disconnect_timeout)) as lines:
            async for line in lines:
                if as_json:
                    print(_line_json(lc.backend.name, line), flush=True)
                else:
                    print(safe_text(line), flush=True)

    import asyncio

    asyncio.run(stream())  # a BrokenPipeError ends it quietly in main() (exit 141, as `cat | head`)


def _line_json(backend: str, line: str) -> str:
    return json.dumps({"backend": backend, "line": line}, ensure_ascii=False)


# --- registration ---------------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (shapes in docs/cli-json.md)")
    # Also accepted after the subcommand; SUPPRESS keeps the main parser's value when absent.
    p.add_argument("--backend", choices=CHOICES, default=argparse.SUPPRESS,
                   help="nitro-cli backend (also accepted before the subcommand)")
    p.add_argument("--read-only", action="store_true", default=argparse.SUPPRESS,
                   help="refuse every mutating action (also accepted before the subcommand)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0 or value > 1 << 32:
        raise argparse.ArgumentTypeError(f"{text} is out of range")
    return value


def _memory_mib(text: str) -> int:
    """nitro-cli's --memory syntax: MiB, or a number with M/G/T (``512``, ``512M``, ``2G``)."""
    units = {"": 1, "m": 1, "g": 1024, "t": 1024 * 1024}
    digits = text.strip()
    unit = digits[-1:].lower() if digits[-1:].isalpha() else ""
    number = digits[: len(digits) - len(unit)]
    if unit not in units or not (number.isascii() and number.isdigit()) or len(number) > 12:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a memory size (e.g. 512, 512M, 2G)")
    return _positive_int(str(int(number) * units[unit]))


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a number of seconds") from None
    if not 0.1 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text} is out of range (0.1 to 86400 seconds)")
    return value


def register(subparsers: Any) -> None:
    path = resolve_path  # every path reaches the backend absolute (it may run elsewhere)
    p = subparsers.add_parser("status", help="backend, instance, enclaves, CPU pool, hugepages, host load")
    p.add_argument("--watch", type=_seconds, nargs="?", const=2.0, default=None, metavar="SECONDS",
                   help="repeat every SECONDS (default 2): redrawn in place on a terminal, "
                        "one JSON object per line with --json")
    _common(p)
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("describe", help="running enclaves (describe-enclaves)")
    p.add_argument("--metadata", action="store_true", help="include image name, version and build metadata")
    _common(p)
    p.set_defaults(func=cmd_describe)

    p = subparsers.add_parser(
        "describe-eif", help="measurements and metadata of an EIF file",
        description="With FILE: nitrodeck's view (--json: with the backend). "
                    "With --eif-path: nitro-cli's describe-eif, its exact JSON.")
    p.add_argument("eif", nargs="?", type=path, metavar="FILE", help="the EIF file")
    p.add_argument("--eif-path", type=path, help="the EIF file, nitro-cli's spelling (prints nitro-cli's JSON)")
    _common(p)
    p.set_defaults(func=cmd_describe_eif)

    p = subparsers.add_parser("build", help="build an EIF (build-enclave)")
    p.add_argument("--docker-uri", help="Docker image to build from (with --payload: the tag to build it as)")
    p.add_argument("--docker-dir", type=path, help="a folder with a Dockerfile, built and tagged --docker-uri")
    p.add_argument("--output-file", type=path, help="where the EIF is written")
    p.add_argument("--signing-certificate", type=path, help="PEM certificate to sign the EIF with (gives PCR8)")
    p.add_argument("--private-key", type=key_or_path, help="PEM private key or KMS key ARN for signing")
    p.add_argument("--name", help="image name (default: from the Docker URI)")
    p.add_argument("--version", help="image version (default: the Docker image ID)")
    p.add_argument("--metadata", type=path, help="custom metadata JSON file")
    p.add_argument("--rootfs", type=path, help="emulator only: a folder as the image filesystem")
    p.add_argument("--cmd", help="emulator only: the command for --rootfs")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="emulator only; repeatable")
    p.add_argument("--image-tar", type=path, help="emulator only: a docker save / OCI tarball")
    p.add_argument(
        "--payload",
        action="store_true",
        help="build the nitrodeck enclave payload (without Docker; with --docker-uri TAG, through Docker)",
    )
    p.add_argument(
        "--build-time",
        metavar="RFC3339",
        help="emulator only: fixed BuildTime so the same inputs give a bit-identical EIF (--payload fixes it)",
    )
    _common(p)
    p.set_defaults(func=cmd_build)

    p = subparsers.add_parser("launch", help="start an enclave (run-enclave)")
    p.add_argument("--eif-path", type=path, help="the EIF to run (required unless --config)")
    p.add_argument("--memory", type=_memory_mib, metavar="MiB", help="MiB, or with M/G/T (required unless --config)")
    cpu = p.add_mutually_exclusive_group()
    cpu.add_argument("--cpu-count", type=_positive_int, help="how many CPUs from the pool")
    cpu.add_argument("--cpu-ids", type=_positive_int, nargs="+", help="exactly these CPUs from the pool")
    p.add_argument("--cid", "--enclave-cid", dest="cid", type=_positive_int,
                   help="the enclave's vsock CID (4 and up; default: chosen by the backend)")
    p.add_argument("--debug-mode", action="store_true", help="debug mode: console readable, PCRs all zero")
    p.add_argument("--attach-console", action="store_true",
                   help="stream the console after the launch (implies --debug-mode)")
    p.add_argument("--name", "--enclave-name", dest="name", help="enclave name (default: from the EIF file name)")
    p.add_argument("--config", type=path, metavar="JSON_FILE",
                   help="run-enclave's JSON config (eif_path, memory_mib, cpu_count or cpu_ids, ...) instead of flags")
    _common(p)
    p.set_defaults(func=cmd_launch)

    p = subparsers.add_parser("terminate", help="stop an enclave by ID or name, or --all")
    p.add_argument("enclave", nargs="?", help="enclave ID, name, or a unique start of the part after -enc")
    p.add_argument("--enclave-id", help="the enclave by its ID (nitro-cli's spelling)")
    p.add_argument("--enclave-name", help="the enclave by its name (nitro-cli's spelling)")
    p.add_argument("--all", action="store_true", help="every running enclave")
    _common(p)
    p.set_defaults(func=cmd_terminate)

    p = subparsers.add_parser(
        "console", help="stream a debug-mode enclave's console",
        description="With ENCLAVE: the console's lines. With only --enclave-id / --enclave-name: "
                    "nitro-cli's console, its output exactly (the connection preamble included).")
    p.add_argument("enclave", nargs="?", help="enclave ID, name, or a unique start of the part after -enc")
    p.add_argument("--enclave-id", help="the enclave by its ID (nitro-cli's spelling)")
    p.add_argument("--enclave-name", help="the enclave by its name (nitro-cli's spelling)")
    p.add_argument("--disconnect-timeout", type=_positive_int, metavar="SECONDS",
                   help="disconnect after SECONDS")
    p.add_argument("--log", action="store_true", help="print the kept console log (also of exited enclaves)")
    _common(p)
    p.set_defaults(func=cmd_console)
