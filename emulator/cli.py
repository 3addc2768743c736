"""nitro-emu: nitro-cli 1.5.0's command line, run against the emulator.

Output is nitro-cli's: JSON on stdout (indent 2, nitro-cli's key order), progress on stderr, failures as
the ``[ Exx ]`` block with an err log, exit status = the E number; usage errors exit 2 like clap.

Which run-enclave failures are wrapped: everything the enclave process (our supervisor) raises —
E19 (EIF open), E20/E21/E22, E26, E29 (a 5th enclave, no free core, the driver's start checks), E59, E27, E35, E36 — is printed as its own
block, then ``Failed connections: 1`` and the E39 block; exit 39. Argument errors found before the
enclave process starts (E01/E02/E03/E17/E19 of --config) are printed alone with their own exit status.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

from core import home
from core.backends.real import ENV_READ_ONLY
from core.channel.unixsock import short_path
from core.errors import NitrodeckError, ReadOnlyError
from emulator import control, state
from emulator.errors import EmuError, explain
from emulator.logs import TOLD_READ_ONLY, error_block, log_line, read_only, write_err_log

VERSION_TEXT = "Nitro CLI 1.5.0"
MAX_CONFIG_BYTES = 64 * 1024
MAX_PEM = 1024 * 1024
U32_MAX = 0xFFFFFFFF
LAUNCH_TIMEOUT = 150.0
CONTROL_TIMEOUT = 15.0
#: describe waits this long for an enclave process before showing it as UNRESPONSIVE
DESCRIBE_TIMEOUT = 3.0
#: nitro-cli's own subcommands (lib.rs create_app!), whose command lines follow clap's rules
CLAP_COMMANDS = frozenset({"run-enclave", "terminate-enclave", "build-enclave", "describe-eif", "describe-enclaves",
                           "console", "pcr", "explain", "sign-eif"})
#: the commands that change something (enclaves, the allocator, files); refused read-only
CHANGES = frozenset({"run-enclave", "terminate-enclave", "build-enclave", "sign-eif", "restart-allocator"})
E44_SUBACTION = (
    "The enclave was not started with the debug flag set, include '--debug-mode' in the run-enclave command"
)

ACTIONS = {
    "run-enclave": "Run Enclave",
    "describe-enclaves": "Describe Enclaves",
    "terminate-enclave": "Terminate Enclave",
    "console": "Enclave Console",
    "build-enclave": "Build Enclave",
    "describe-eif": "Describe EIF",
    "pcr": "Get PCR",
    "sign-eif": "Sign EIF",
}


#: where this command's stdout and stderr go: the process's own, or (a command answered inside another
#: process, :func:`answer`) two buffers. Per thread and task, so concurrent answers never mix.
_STREAMS: contextvars.ContextVar[tuple[TextIO, TextIO] | None] = contextvars.ContextVar("nitro_emu_streams", default=None)


def stdout() -> TextIO:
    streams = _STREAMS.get()
    return sys.stdout if streams is None else streams[0]


def stderr() -> TextIO:
    streams = _STREAMS.get()
    return sys.stderr if streams is None else streams[1]


def write_err(text: str) -> None:
    stream = stderr()
    stream.write(text)
    stream.flush()


def write_out(text: str) -> None:
    stream = stdout()
    stream.write(text)
    stream.flush()


def out_json(obj: Any) -> None:
    write_out(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def fail(err: EmuError, action: str) -> int:
    path = write_err_log(err, action)
    log_line("nitro-cli", "ERROR", f"{action}: {err.code} {err.message.splitlines()[0]}")
    write_err(error_block(err, path))
    return err.exit_status


def note(text: str) -> None:
    """Where the emulator must differ from nitro-cli it says so in one stderr line of its own."""
    write_err(f"nitro-emu: {text}\n")


def warn(text: str) -> None:
    note(text)
    log_line("nitro-cli", "WARN", text)


# --- argument parsing ---------------------------------------------------------------------------


#: the command line being parsed, for the usage errors that clap words after the token it met
_ARGV: contextvars.ContextVar[Sequence[str]] = contextvars.ContextVar("nitro_emu_argv", default=())


class _Parser(argparse.ArgumentParser):
    """argparse with clap's habits: usage errors in clap's layout on stderr, exit 2 (emulator.usage)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # clap takes a token that starts with '-' for a flag, a negative number too (no argument of
        # nitro-cli allows hyphen values): "--cpu-count -1" is a usage error, not E03
        self._negative_number_matcher = re.compile(r"(?!)")

    def error(self, message: str) -> NoReturn:
        from emulator.usage import EXIT_USAGE, render

        write_err(render(self, message, _ARGV.get()))
        raise SystemExit(EXIT_USAGE)


def parser_for(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The subcommand's own parser, so that its errors show its usage line."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]  # type: ignore[no-any-return]
    return parser


def build_parser() -> _Parser:
    p = _Parser(
        prog="nitro-cli",
        description="CLI for enclave lifecycle management. (nitro-emu: emulated on this host, no Nitro hypervisor.)",
    )
    p.add_argument("--version", "-V", action="store_true", help="Print version information")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    run = sub.add_parser("run-enclave", help="Starts a new enclave")
    cpus = run.add_mutually_exclusive_group()
    cpus.add_argument("--cpu-ids", nargs="+", metavar="cpu-ids", help="List of CPU IDs provided for the enclave")
    cpus.add_argument("--cpu-count", metavar="cpu-count", help="Number of CPUs to use for the enclave")
    run.add_argument("--memory", metavar="memory", help="Memory to allocate for the enclave in MB")
    run.add_argument("--eif-path", metavar="eif-path", help="Path pointing to a prebuilt Eif image")
    run.add_argument("--enclave-cid", metavar="enclave-cid", help="CID to be used for the newly started enclave")
    run.add_argument("--debug-mode", action="store_true", help="Starts enclave in debug-mode")
    run.add_argument("--attach-console", action="store_true", help="Attach the enclave console (implies debug-mode)")
    run.add_argument("--enclave-name", metavar="enclave-name", help="Custom name assigned to the enclave by the user")
    run.add_argument("--config", metavar="json-config", help="Config is used to read enclave settings from JSON file")

    desc = sub.add_parser("describe-enclaves", help="Returns a list of the running enclaves")
    desc.add_argument("--metadata", action="store_true", help="Adds EIF metadata to the output")

    term = sub.add_parser("terminate-enclave", help="Terminates an enclave")
    which = term.add_mutually_exclusive_group(required=True)
    which.add_argument("--enclave-id", metavar="enclave-id")
    which.add_argument("--enclave-name", metavar="enclave-name")
    which.add_argument("--all", action="store_true", help="Terminate all running enclaves")

    build = sub.add_parser("build-enclave", help="Builds an enclave image and saves it to a file")
    build.add_argument("--docker-uri", metavar="docker-uri", help="Uri pointing to an existing docker container")
    build.add_argument("--docker-dir", metavar="docker-dir", help="Local path to a directory containing a Dockerfile")
    build.add_argument("--output-file", metavar="output-file", required=True, help="Location where the Enclave Image should be saved")
    build.add_argument("--signing-certificate", metavar="signing-certificate", help="Local path to developer's X509 signing certificate.")
    build.add_argument("--private-key", metavar="private-key", help="Local path or KMS key ARN of the signing key.")
    build.add_argument("--name", metavar="image_name", help="Name for enclave image")
    build.add_argument("--version", metavar="image_version", dest="image_version", help="Version of the enclave image")
    build.add_argument("--metadata", metavar="metadata", help="Path to JSON containing the custom metadata provided by the user.")
    build.add_argument("--rootfs", metavar="DIR", help="(emulator only) build from a root filesystem folder")
    build.add_argument("--cmd", metavar="ARGS", help='(emulator only) command of the image, e.g. "python3 -m app"')
    build.add_argument("--env", metavar="K=V", action="append", default=[], help="(emulator only) environment entry; repeatable")
    build.add_argument("--image-tar", metavar="FILE", help="(emulator only) build from a `docker save` / OCI tarball")
    build.add_argument(
        "--build-time",
        metavar="RFC3339",
        help="(emulator only) fixed BuildTime for a bit-identical EIF (default: $SOURCE_DATE_EPOCH, else now)",
    )

    deif = sub.add_parser("describe-eif", help="Returns information about the EIF found at a given path")
    deif.add_argument("--eif-path", metavar="eif-path", required=True)

    con = sub.add_parser("console", help="Connect to the console of an enclave")
    cw = con.add_mutually_exclusive_group(required=True)
    cw.add_argument("--enclave-id", metavar="enclave-id")
    cw.add_argument("--enclave-name", metavar="enclave-name")
    con.add_argument("--disconnect-timeout", metavar="disconnect-timeout")

    pcr = sub.add_parser("pcr", help="Return the PCR hash value of the given input")
    pw = pcr.add_mutually_exclusive_group(required=True)
    pw.add_argument("--input", metavar="input")
    pw.add_argument("--signing-certificate", metavar="signing-certificate")

    # lib.rs create_app!: none of sign-eif's arguments is required; the certificate and the key require
    # each other (checked in cmd_sign, as clap's `requires`)
    sign = sub.add_parser("sign-eif", help="Signs an existing enclave image file")
    sign.add_argument("--eif-path", metavar="eif-path")
    sign.add_argument("--signing-certificate", metavar="signing-certificate")
    sign.add_argument("--private-key", metavar="private-key")

    sub.add_parser(
        "restart-allocator",
        help="(nitro-emu only) systemctl restart nitro-enclaves-allocator.service: re-read allocator.yaml",
    )
    sub.add_parser("emulator-describe", help="(nitro-emu only) each enclave's EIF path and isolation, as JSON")

    exp = sub.add_parser("explain", help="Display detailed information about an error returned by a misbehaving Nitro CLI command")
    exp.add_argument("--error-code", metavar="error-code", required=True)
    return p


# --- run-enclave --------------------------------------------------------------------------------


def rust_uint(text: str, bits: int) -> int | None:
    """Rust's ``str::parse`` for an unsigned integer of ``bits`` bits: ASCII digits after an optional
    ``+`` (no spaces, no ``-``, any number of leading zeros), the value below 2^bits; else None."""
    digits = text[1:] if text.startswith("+") else text
    if not digits or not all("0" <= ch <= "9" for ch in digits):
        return None
    value = int(digits)
    return value if value < 1 << bits else None


#: commands_parser.rs MemoryUnit::from_str: the suffix after the number, in MiB
_MEMORY_UNITS = {"": 1, "M": 1, "m": 1, "G": 1024, "g": 1024, "T": 1024 * 1024, "t": 1024 * 1024}


def parse_memory(text: str) -> int:
    """commands_parser.rs parse_memory: the number is everything before the first non-numeric
    character (char::is_numeric), the rest must be a unit; ``num * unit`` wraps at 2^64 as in a
    release build. Anything else is E03 with ["memory", text]."""
    cut = next((i for i, ch in enumerate(text) if not ch.isnumeric()), len(text))
    num = rust_uint(text[:cut], 64)
    unit = _MEMORY_UNITS.get(text[cut:])
    if num is None or unit is None:
        raise EmuError(code="E03", info=["memory", text])
    return (num * unit) % (1 << 64)


def check_cid(value: int) -> int:
    """nitro-cli's CID rules. Like nitro-cli these E03s carry no parameters: the line shows MISSING_INFO."""
    if value == 0:
        write_err("The enclave CID will be auto-generated as the provided CID is 0\n")
        return 0
    if value in (1, 2, U32_MAX):
        raise EmuError(code="E03", subactions=[f"CID {value} is a well-known CID, not to be used for enclaves"])
    if value == 3:
        raise EmuError(code="E03", subactions=["CID 3 is the CID of the parent VM, not to be used for enclaves"])
    if value > U32_MAX:
        raise EmuError(
            code="E03", subactions=[f"CID {value} is higher than the maximum supported (u32 max) for a vsock device"]
        )
    return value


def parse_uint(name: str, text: str, bits: int) -> int:
    """commands_parser.rs: a value that ``parse::<u32>()``/``<u64>()`` refuses is E03 with [name, text]."""
    value = rust_uint(text, bits)
    if value is None:
        raise EmuError(code="E03", info=[name, text])
    return value


def launch_from_args(args: argparse.Namespace, parser: _Parser) -> dict[str, Any]:
    if args.config is not None:
        others = [f for f in ("cpu_ids", "cpu_count", "memory", "eif_path", "enclave_cid", "enclave_name") if getattr(args, f) is not None]
        if args.debug_mode:
            others.append("debug_mode")
        if others:
            run_parser = parser_for(parser, "run-enclave")
            run_parser.error(f"argument --{others[0].replace('_', '-')}: not allowed with argument --config")
        return launch_from_config(args.config, args.attach_console)
    missing = [flag for flag, v in (("--cpu-ids", args.cpu_ids if args.cpu_count is None else 1),
                                    ("--cpu-count", args.cpu_count if args.cpu_ids is None else 1),
                                    ("--memory", args.memory), ("--eif-path", args.eif_path)) if v is None]
    if missing:
        # clap lists every required argument that is missing, in the order they are defined
        parser_for(parser, "run-enclave").error(f"the following arguments are required: {', '.join(missing)}")
    # nitro-cli's parse order, so the first bad value reported is the same one
    # (commands_parser.rs RunEnclavesArgs::new_with: cpu-count u32, enclave-cid u64, memory, each
    # cpu-id u32 and named "cpu-id" in its E03)
    cpu_count = parse_uint("cpu-count", args.cpu_count, 32) if args.cpu_count is not None else None
    cid = check_cid(parse_uint("enclave-cid", args.enclave_cid, 64)) if args.enclave_cid is not None else 0
    memory = parse_memory(args.memory)
    cpu_ids = [parse_uint("cpu-id", c, 32) for c in args.cpu_ids] if args.cpu_ids is not None else None
    return {
        "eif_path": args.eif_path,
        "memory_mib": memory,
        "cpu_count": cpu_count,
        "cpu_ids": cpu_ids,
        "cid": cid,
        "debug": bool(args.debug_mode or args.attach_console),
        "name": args.enclave_name,
        "attach_console": bool(args.attach_console),
    }


_CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "eif_path": str,
    "memory_mib": int,
    "cpu_count": int,
    "cpu_ids": list,
    "enclave_cid": int,
    "enclave_name": str,
    "debug_mode": bool,
    "attach_console": bool,
}


_OPTIONAL_CONFIG = ("enclave_cid", "enclave_name", "cpu_count", "cpu_ids")


def _config_value_ok(key: str, value: Any) -> bool:
    """serde's typing of RunEnclavesArgs: unsigned integers, strings, booleans, a list of u32."""
    if value is None:
        return key in _OPTIONAL_CONFIG
    typ = _CONFIG_TYPES[key]
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64
    if key == "cpu_ids":
        return (
            isinstance(value, list)
            and len(value) <= 1024
            and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 2**32 for c in value)
        )
    return isinstance(value, typ)


def parse_config(raw: bytes, where: str) -> dict[str, Any]:
    """run-enclave --config JSON -> launch request (E17 malformed, E01/E02 CPU keys)."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise EmuError(code="E17", subactions=[f"{where}: larger than {MAX_CONFIG_BYTES} bytes"])
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise EmuError(code="E17", subactions=[f"Invalid JSON format for the enclave config: {exc}"]) from None
    if not isinstance(data, dict):
        raise EmuError(code="E17", subactions=["the enclave config must be a JSON object"])
    for key, value in data.items():
        if key in _CONFIG_TYPES and not _config_value_ok(key, value):
            raise EmuError(code="E17", subactions=[f"invalid type for `{key}` in the enclave config"])
    for key in ("eif_path", "memory_mib"):
        if key not in data:
            raise EmuError(code="E17", subactions=[f"missing field `{key}` in the enclave config"])
    has_count = data.get("cpu_count") is not None
    has_ids = data.get("cpu_ids") is not None
    if not has_count and not has_ids:
        # nitro-cli attaches no parameters here either (the printed line shows MISSING_INFO)
        raise EmuError(code="E01", subactions=["Missing both `cpu-count` and `cpu-ids`"])
    if has_count and has_ids:
        raise EmuError(code="E02", subactions=["`cpu-count` and `cpu-ids` cannot be used together"])
    cid = data.get("enclave_cid")
    attach = bool(data.get("attach_console", False))
    return {
        "eif_path": data["eif_path"],
        "memory_mib": data["memory_mib"],
        "cpu_count": data.get("cpu_count"),
        "cpu_ids": data.get("cpu_ids"),
        # commands_parser.rs takes the config's enclave_cid as it is: no CLI-side CID checks (the driver
        # refuses a reserved CID at NE_START_ENCLAVE)
        "cid": cid if cid is not None else 0,
        "debug": bool(data.get("debug_mode", False)) or attach,
        "name": data.get("enclave_name"),
        "attach_console": attach,
    }


def launch_from_config(path: str, attach_flag: bool) -> dict[str, Any]:
    from core.files import open_regular

    if os.path.isdir(path):
        # File::open opens a folder; serde_json's read of it fails (commands_parser.rs:54): E17
        raise EmuError(code="E17", subactions=["Invalid JSON format for config file: Is a directory (os error 21)"])
    try:
        # never blocks on a FIFO or device: those are refused like a missing file
        with os.fdopen(open_regular(path, where="--config"), "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except (OSError, NitrodeckError):
        raise EmuError(code="E19", info=[path, "Open"], subactions=["Failed to open the enclave config file"]) from None
    req = parse_config(raw, path)
    if attach_flag:
        req["attach_console"] = True
        req["debug"] = True
    return req


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def spawn_supervisor() -> tuple[socket.socket, int]:
    """Start a daemonized supervisor; returns our end of its launch channel and its PID."""
    import subprocess  # only run-enclave starts processes

    ours, theirs = socket.socketpair()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
    err_path = home.ensure(home.emulator_log_dir()) / "supervisor-stderr.log"
    with open(err_path, "ab") as err_fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emulator.supervisor", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err_fh,
            env=env,
            cwd="/",
            start_new_session=True,
        )
    theirs.close()
    return ours, proc.pid


def cmd_run(args: argparse.Namespace, parser: _Parser) -> int:
    action = ACTIONS["run-enclave"]
    try:
        req = launch_from_args(args, parser)
    except EmuError as err:
        return fail(err, action)
    attach = req.pop("attach_console")
    try:
        req["cwd"] = os.getcwd()
    except OSError:
        pass  # the caller's folder is gone: a relative eif_path then fails to open (E19), as in nitro-cli
    try:
        chan, pid = spawn_supervisor()
    except OSError as exc:
        return fail(EmuError(code="E05", subactions=[f"cannot start the enclave process: {exc}"]), action)
    log_line("nitro-cli", "INFO", f"spawned enclave process {pid}")
    result: dict[str, Any] | None = None
    inner_error = False
    with chan:
        chan.settimeout(LAUNCH_TIMEOUT)
        try:
            control.send(chan, req)
            while True:
                msg = control.recv(chan)
                if "stderr" in msg:
                    write_err(str(msg["stderr"]))
                elif "result" in msg:
                    result = msg["result"]
                    # confirmed before anything is printed: an enclave whose run-enclave died before
                    # this point is rolled back by its supervisor, so no failed launch leaves one running
                    control.send(chan, {"ack": True})
                    break
                elif "error" in msg:
                    write_err(str(msg["error"]))
                    inner_error = True
                    break
        except (OSError, ConnectionError, NitrodeckError):
            pass
    if result is None:
        if inner_error:
            write_err("Failed connections: 1\n")
        return fail(EmuError(code="E39", subactions=["Failed to receive the enclave's run information"]), action)
    out_json(result)
    if attach:
        return attach_console(result["EnclaveID"], None)
    return 0


# --- talking to supervisors ---------------------------------------------------------------------


def ask(entry: state.Entry, cmd: str, timeout: float = CONTROL_TIMEOUT) -> dict[str, Any]:
    path = state.slot_dir(entry.slot) / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(short_path(path))
        # the deadline: a supervisor that reads this later (it was stopped) must not act on it
        control.send(sock, {"cmd": cmd, "deadline": time.time() + timeout})
        return control.recv(sock)


def unresponsive_reason(entry: state.Entry) -> str | None:
    """Why the enclave process cannot answer now, without waiting for it (None: it may answer)."""
    run_state = state.proc_state(entry.supervisor_pid)
    if run_state in ("T", "t"):
        return f"the enclave process (PID {entry.supervisor_pid}) is stopped (SIGSTOP); its resources stay held"
    if not (state.slot_dir(entry.slot) / "control.sock").exists():
        return f"the enclave process (PID {entry.supervisor_pid}) has no control socket"
    return None


def unresponsive_info(entry: state.Entry, reason: str) -> dict[str, Any]:
    """describe-enclaves' element for an enclave that does not answer: shown with what it holds."""
    return {
        "EnclaveName": entry.name,
        "EnclaveID": entry.enclave_id,
        "ProcessID": entry.supervisor_pid,
        "EnclaveCID": entry.cid,
        "NumberOfCPUs": len(entry.cpu_ids),
        "CPUIDs": entry.cpu_ids,
        "MemoryMiB": entry.memory_mib,
        "State": "UNRESPONSIVE",
        "Flags": "DEBUG_MODE" if entry.debug else "NONE",
    }


def live_entries() -> list[state.Entry]:
    """The enclave table after reclaiming dead supervisors (each reported once, here). Read-only, the
    table is read under a shared lock and nothing is reclaimed: a dead supervisor's enclave is left out,
    and what it held is released by the next nitro-emu that may change things."""
    if read_only():
        with state.read_locked() as found:
            for problem in found.problems:
                warn(problem)
            for dead in found.dead:
                warn(
                    f"the enclave process (PID {dead.supervisor_pid}) of enclave {dead.enclave_id} is gone; "
                    "its resources are released by the next command that may change things (read-only here)"
                )
            return list(found.entries)
    with state.locked() as table:
        for problem in table.problems:
            warn(problem)
        for dead in table.reclaimed:
            warn(
                f"the enclave process (PID {dead.supervisor_pid}) of enclave {dead.enclave_id} is gone; "
                "its enclave was stopped and its resources released"
            )
        return list(table.entries)


def forget(entry: state.Entry) -> None:
    """A supervisor that stopped answering and died: release what it held (not read-only)."""
    if state.entry_alive(entry) or read_only():
        return
    live_entries()


def find_entry(enclave_id: str | None, name: str | None) -> state.Entry:
    entries = [e for e in live_entries() if e.started]
    if enclave_id is not None:
        # common/mod.rs get_socket_path: only the part after the last "-enc" names the enclave process
        slot = enclave_id.rsplit("-enc", 1)[-1]
        for e in entries:
            if e.slot == slot:
                return e
        raise EmuError(code="E11", subactions=[f"Failed to connect to the enclave process of {enclave_id}: no such enclave"])
    matches = [e for e in entries if e.name == name]
    if not matches:
        raise EmuError(code="E58", subactions=["No enclave matched the given name."])
    if len(matches) > 1:
        raise EmuError(code="E58", subactions=["Conflicting enclave names have been found."])
    return matches[0]


def describe_one(entry: state.Entry, metadata: bool) -> dict[str, Any] | None:
    reason = unresponsive_reason(entry)
    if reason is not None:
        warn(f"enclave {entry.enclave_id}: {reason}")
        return unresponsive_info(entry, reason)
    try:
        reply = ask(entry, "describe", DESCRIBE_TIMEOUT)
    except (OSError, NitrodeckError):
        if not any(e.enclave_id == entry.enclave_id for e in state.read_entries()):
            return None  # terminated meanwhile: nothing to report
        if not state.entry_alive(entry):
            forget(entry)
            return None
        # alive but silent: still shown, with what it holds (never as free resources)
        reason = unresponsive_reason(entry) or (
            f"the enclave process (PID {entry.supervisor_pid}) did not answer within {DESCRIBE_TIMEOUT:.0f} s"
        )
        warn(f"enclave {entry.enclave_id}: {reason}")
        return unresponsive_info(entry, reason)
    info = dict(reply.get("info", {}))
    if metadata:
        info.update(reply.get("identity", {}))
    return info


T = TypeVar("T")
R = TypeVar("R")


def side_by_side(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(item) for item in items]``, each item in its own thread (one enclave process that does not
    answer costs DESCRIBE_TIMEOUT once, not per enclave), results in order; the first exception raised
    is raised here. Each thread runs in a copy of this one's context, so its output goes where ours does.
    (Plain threads: concurrent.futures would cost every describe-enclaves its import.)"""
    if len(items) <= 1:
        return [fn(item) for item in items]
    results: list[Any] = [None] * len(items)
    errors: list[BaseException | None] = [None] * len(items)

    def run(index: int, item: T) -> None:
        try:
            results[index] = fn(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            errors[index] = exc

    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(run, i, item), daemon=True)
        for i, item in enumerate(items)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return results


def cmd_describe(args: argparse.Namespace) -> int:
    started = [e for e in live_entries() if e.started]
    infos = side_by_side(lambda e: describe_one(e, args.metadata), started)
    out_json([info for info in infos if info is not None])
    return 0


def cmd_restart_allocator() -> int:
    """nitro-emu only: what ``systemctl restart nitro-enclaves-allocator.service`` does on a parent.

    allocator.yaml is read when the allocator starts, not at each launch; the script's lines go to
    stdout and its ``Error: ...`` ends a failed start with exit 1, as the script does."""
    from emulator.allocator import start_allocator
    from emulator.instance import load_instance

    running = any(e for e in live_entries())
    st = start_allocator(load_instance(), enclaves_running=running)
    for line in st.output:
        # the script's own lines are its stdout; what only the emulator says goes to stderr
        (write_err if line.startswith("nitro-emu:") else write_out)(line + "\n")
    return 1 if st.error else 0


def cmd_emulator_describe() -> int:
    """nitro-emu only: per enclave, the EIF it runs and its isolation (describe-enclaves keeps nitro-cli's
    keys, json_output.rs EnclaveDescribeInfo, and nothing else)."""

    def one(entry: state.Entry) -> dict[str, Any] | None:
        problem = unresponsive_reason(entry)
        reply: dict[str, Any] = {}
        if problem is None:
            try:
                reply = ask(entry, "describe", DESCRIBE_TIMEOUT)
            except (OSError, NitrodeckError):
                if not state.entry_alive(entry):
                    return None  # ended meanwhile; describe-enclaves reports that
                problem = f"the enclave process (PID {entry.supervisor_pid}) did not answer within {DESCRIBE_TIMEOUT:.0f} s"
        item = {"EnclaveID": entry.enclave_id, "EnclaveName": entry.name, "EifPath": entry.eif_path,
                "Isolation": reply.get("isolation")}
        if reply.get("console"):
            item["Console"] = reply["console"]  # only when console output was dropped (full disk)
        if problem is not None:
            item["Problem"] = problem  # describe-enclaves shows it as State UNRESPONSIVE
        return item

    # the table without its lock: this command only reads, and nothing here may touch the run folder
    # (a front end watching that folder hears a lock file closed after writing as a change)
    started = [e for e in state.read_entries() if e.started and state.entry_alive(e)]
    out_json([item for item in side_by_side(one, started) if item is not None])
    return 0


def terminate_one(entry: state.Entry) -> dict[str, Any]:
    reason = unresponsive_reason(entry)
    if reason is not None:
        warn(f"enclave {entry.enclave_id} was not terminated: {reason}")
        raise EmuError(code="E11", subactions=[f"Enclave {entry.enclave_id} was not terminated: {reason}"])
    try:
        reply = ask(entry, "terminate")
    except (OSError, NitrodeckError):
        forget(entry)
        if state.entry_alive(entry):
            # the request carried a deadline: the enclave process ignores it if it reads it later
            warn(f"enclave {entry.enclave_id} was not terminated: its enclave process did not answer")
            raise EmuError(
                code="E11",
                subactions=[
                    f"Enclave {entry.enclave_id} was not terminated: its enclave process "
                    f"(PID {entry.supervisor_pid}) did not answer, and will not act on this request later"
                ],
            ) from None
        raise EmuError(code="E11", subactions=[f"Failed to connect to the enclave process of {entry.enclave_id}"]) from None
    info = reply.get("terminated", {})
    # the supervisor replies after releasing everything; wait (bounded) for its exit so that nothing of
    # the enclave is left when this command returns
    deadline = time.monotonic() + 5.0
    while state.entry_alive(entry) and time.monotonic() < deadline:
        time.sleep(0.02)
    write_err(f"Successfully terminated enclave {entry.enclave_id}.\n")
    return {"EnclaveName": info.get("EnclaveName", entry.name), "EnclaveID": entry.enclave_id, "Terminated": True}


def cmd_terminate(args: argparse.Namespace) -> int:
    action = ACTIONS["terminate-enclave"]
    try:
        if args.all:
            results = []
            left: list[str] = []
            # enclaves still booting have no control socket yet: like nitro-cli, --all sees running ones
            for entry in [e for e in live_entries() if e.started]:
                try:
                    results.append(terminate_one(entry))
                except EmuError as err:
                    if state.entry_alive(entry):
                        left.extend(err.subactions)  # still there: never reported as done
            out_json(results)
            if left:
                raise EmuError(code="E11", subactions=left)
            return 0
        entry = find_entry(args.enclave_id, args.enclave_name)
        out_json(terminate_one(entry))
        return 0
    except EmuError as err:
        return fail(err, action)


# --- console ------------------------------------------------------------------------------------


def attach_console(enclave_id: str | None, name: str | None, timeout: float | None = None) -> int:
    from emulator.console import console_file, follow

    action = ACTIONS["console"]
    try:
        entry = find_entry(enclave_id, name)
        if not entry.debug:
            raise EmuError(code="E44", subactions=[E44_SUBACTION])
    except EmuError as err:
        return fail(err, action)
    write_out(f"Connecting to the console for enclave {entry.cid}...\nSuccessfully connected to the console.\n")
    try:
        follow(
            console_file(entry.enclave_id, create=False),  # its supervisor made it: reading makes nothing
            alive=lambda: state.entry_alive(entry),
            disconnect_timeout=timeout,
        )
    except BrokenPipeError:
        pass
    except OSError as exc:
        return fail(EmuError(code="E45", subactions=[f"reading the console failed: {exc}"]), action)
    return 0


# --- images -------------------------------------------------------------------------------------


def cmd_describe_eif(args: argparse.Namespace) -> int:
    from core.eif.format import read_eif
    from emulator.eifinfo import describe_eif

    action = ACTIONS["describe-eif"]
    try:
        # nitro-cli's EifReader::from_eif opens and parses in one step: a missing file is E35 too
        # (lib.rs describe_eif), with no file/operation line. Opened once (a FIFO is refused, never
        # read); every figure comes from this one descriptor, and a file written meanwhile is refused
        try:
            with read_eif(args.eif_path) as eif:
                out = describe_eif(eif)
                eif.check_unchanged()
        except (NitrodeckError, OSError) as exc:
            raise EmuError(code="E35", subactions=[f"Failed to initialize EIF reader: {exc}"]) from None
    except EmuError as err:
        return fail(err, action)
    out_json(out)
    return 0


def cmd_pcr(args: argparse.Namespace) -> int:
    """lib.rs get_file_pcr: open/read failures are E19 without a file line; a bad PEM is E57."""
    from core.eif.measure import pcr_of_bytes, pcr_of_file
    from core.files import read_limited

    action = ACTIONS["pcr"]
    try:
        if args.input is not None:
            try:
                out_json({"PCR": pcr_of_file(args.input)})  # a FIFO or device is refused, never read
            except (OSError, NitrodeckError) as exc:
                raise EmuError(code="E19", subactions=[f"Failed to open file: {exc}"]) from None
            return 0
        path = args.signing_certificate
        try:
            pem = read_limited(path, MAX_PEM)
        except NitrodeckError as exc:
            raise EmuError(code="E19", subactions=[f"Failed to open file: {exc.message}"]) from None
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        try:
            if len(pem) > MAX_PEM:
                raise ValueError(f"larger than {MAX_PEM} bytes")
            der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
        except ValueError as exc:
            raise EmuError(code="E57", subactions=[f"Failed to deserialize .pem: {exc}"]) from None
        out_json({"PCR8": pcr_of_bytes(der)})
        return 0
    except EmuError as err:
        return fail(err, action)


def cmd_build(args: argparse.Namespace, parser: _Parser) -> int:
    from emulator.build_cmd import run_build

    sources = [s for s in (args.rootfs, args.image_tar) if s]
    build = parser_for(parser, "build-enclave")
    if not args.docker_uri and not sources:
        build.error("the following arguments are required: --docker-uri")
    if args.rootfs and not args.cmd:
        build.error("the following arguments are required: --cmd")
    if bool(args.signing_certificate) != bool(args.private_key):
        needed = "--private-key" if args.signing_certificate else "--signing-certificate"
        build.error(f"the following arguments are required: {needed}")
    try:
        out = run_build(args)
    except EmuError as err:
        return fail(err, ACTIONS["build-enclave"])
    out_json(out)
    return 0


def cmd_sign(args: argparse.Namespace, parser: _Parser) -> int:
    """lib.rs sign_eif: every failure, a missing EIF included, is E60. Before it, clap refuses a
    certificate without a key (and the reverse), and SignEifArgs::new_with a missing --eif-path (E01,
    no parameter attached)."""
    from core.eif.sign import sign_eif

    if (args.signing_certificate is None) != (args.private_key is None):
        needed = "--private-key" if args.signing_certificate is not None else "--signing-certificate"
        parser_for(parser, "sign-eif").error(f"the following arguments are required: {needed}")
    try:
        if args.eif_path is None:
            raise EmuError(code="E01", subactions=["Parse EIF path", "`eif-path` argument not found"])
        if args.signing_certificate is None:
            # nitro-cli: no SignKeyData, so EifSigner::new gives None
            raise EmuError(code="E60", subactions=["Failed to create EifSigner"])
        try:
            measurements = sign_eif(args.eif_path, args.signing_certificate, args.private_key, locked=True)
        except (NitrodeckError, OSError) as exc:
            raise EmuError(code="E60", subactions=[f"Failed to sign image: {exc}"]) from None
    except EmuError as err:
        return fail(err, ACTIONS["sign-eif"])
    write_err("Enclave Image successfully signed.\n")
    out_json({"Measurements": measurements.as_dict()})
    return 0


# --- entry point --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    return run(sys.argv[1:] if argv is None else argv)


#: the commands another process may have answered in its own process (:func:`answer`): they only read
#: the enclave table (reclaiming what dead supervisors held, as any nitro-emu command does) and ask the
#: enclave processes over their control sockets
IN_PROCESS_COMMANDS = frozenset({"describe-enclaves", "emulator-describe"})


def answer(
    args: Sequence[str], deadline: float, cancelled: Callable[[], bool] | None = None, *, read_only: bool = False
) -> tuple[int, str, str]:
    """``nitro-emu ARGS`` run in this process: its exit status, stdout and stderr as its own process
    would have given them (the same code, the same texts, the same err logs), for
    :data:`IN_PROCESS_COMMANDS`. nitrodeck's driver uses it (emulator/backend.py) to spare every status
    and describe a Python start.

    A caller cannot kill this as it kills a process on its timeout, so the table lock is waited for only
    until ``deadline`` (``time.monotonic()``) or until ``cancelled()``: then :class:`state.LockWaitAbandoned`
    is raised. Asking an enclave process is bounded by DESCRIBE_TIMEOUT as always. ``read_only``: as the
    process with ``NITRODECK_READ_ONLY=1`` in its environment (it writes nothing, reclaims nothing)."""
    if not args or args[0] not in IN_PROCESS_COMMANDS:
        raise ValueError(f"not answered in-process: {' '.join(args)[:80]}")
    import io

    out, err = io.StringIO(), io.StringIO()
    streams = _STREAMS.set((out, err))
    wait = state.LOCK_WAIT.set((deadline, cancelled))
    told = TOLD_READ_ONLY.set(read_only or TOLD_READ_ONLY.get())
    try:
        try:
            code = run(list(args), interruptible=False)
        except SystemExit as exc:  # argparse's usage errors, as the process would have exited
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except state.LockWaitAbandoned:
            raise
        except Exception:  # noqa: BLE001 - the process would have died of it: exit 1, the traceback on stderr
            import traceback

            err.write(traceback.format_exc())
            code = 1
    finally:
        TOLD_READ_ONLY.reset(told)
        state.LOCK_WAIT.reset(wait)
        _STREAMS.reset(streams)
    return code, out.getvalue(), err.getvalue()


def run(argv: list[str], *, interruptible: bool = True) -> int:
    """One nitro-emu command. ``interruptible``: Ctrl-C ends the command with 130, as the process does
    (answered inside another process it is that process's interrupt, and is raised)."""
    parser = build_parser()
    if not argv:
        parser.print_help(stderr())
        return 2
    _ARGV.set(argv)
    if argv[0] in CLAP_COMMANDS:
        from emulator.usage import clap_precheck

        sub_parser = parser_for(parser, argv[0])
        problem = clap_precheck(sub_parser, argv[0], argv[1:])
        if problem is not None:
            sub_parser.error(problem)
    args, extra = parser.parse_known_args(argv)
    if extra:
        # clap names the first argument it does not know, under the subcommand's usage
        sub = parser_for(parser, args.command) if args.command else parser
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.version and args.command is None:
        write_out(VERSION_TEXT + "\n")
        return 0
    if args.command is None:
        parser.print_help(stderr())
        return 2
    if args.command in CHANGES and read_only():
        # nitro-cli has no read-only mode: this is nitrodeck's NITRODECK_READ_ONLY, honoured here too
        note(f"{args.command} is refused: {ENV_READ_ONLY} is set, and it would change this host")
        return ReadOnlyError.exit_status
    try:
        if args.command == "run-enclave":
            return cmd_run(args, parser)
        if args.command == "describe-enclaves":
            return cmd_describe(args)
        if args.command == "emulator-describe":
            return cmd_emulator_describe()
        if args.command == "restart-allocator":
            return cmd_restart_allocator()
        if args.command == "terminate-enclave":
            return cmd_terminate(args)
        if args.command == "console":
            try:
                enclave_id = args.enclave_id
                if args.enclave_name is not None:
                    # ConsoleArgs::new_with looks the name up (E58) before it parses the timeout
                    enclave_id = find_entry(None, args.enclave_name).enclave_id
                timeout = None
                if args.disconnect_timeout is not None:
                    timeout = parse_uint("disconnect-timeout", args.disconnect_timeout, 64)
            except EmuError as err:
                return fail(err, ACTIONS["console"])
            # utils.rs Console::read_to arms a timerfd with the value: 0 disarms it, so 0 means never
            return attach_console(enclave_id, None, timeout or None)
        if args.command == "describe-eif":
            return cmd_describe_eif(args)
        if args.command == "pcr":
            return cmd_pcr(args)
        if args.command == "sign-eif":
            return cmd_sign(args, parser)
        if args.command == "build-enclave":
            return cmd_build(args, parser)
        if args.command == "explain":
            write_err(explain(args.error_code) + "\n")
            return 0
    except NitrodeckError as exc:
        # configuration problems of the emulator itself (instance.yaml, the enclave table)
        return fail(EmuError(code="E00", subactions=[str(exc)]), ACTIONS.get(args.command, args.command))
    except KeyboardInterrupt:
        if not interruptible:
            raise
        return 130
    return 2
