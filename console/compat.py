"""nitro-cli's own commands and flags, so a script written for nitro-cli runs unchanged on nitrodeck.

``nitrodeck describe-enclaves``, ``run-enclave``, ``terminate-enclave``, ``describe-eif``,
``build-enclave``, ``console``, ``pcr``, ``explain`` and ``sign-eif`` take exactly nitro-cli's flags and
hand the command to the selected backend (real nitro-cli, or nitro-emu which reproduces nitro-cli's
output byte for byte) with stdout and stderr passed straight through. So what is printed (the JSON on
stdout, the progress and ``[ Exx ]`` errors on stderr, the console preamble) and the exit status are the
backend's own: re-rendering them from parsed models could only drift from nitro-cli.

What nitrodeck adds on the way: every path argument is resolved against the caller's working directory
(the backend may not run where the caller stands), read-only mode refuses the mutating commands
before anything runs, and each mutating command gets its audit line, as through :class:`Lifecycle`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any

from console.argtypes import key_or_path, resolve_path
from core.backends.base import Backend
from core.backends.real import backend_env
from core.backends.registry import CHOICES, select_backend
from core.errors import NitrodeckError, UsageError
from core.ops.audit import AuditLog
from core.ops.journal import Journal
from core.ops.lifecycle import Lifecycle, mutating, note_command

#: set for the backend's process: a real "nitro-cli" on PATH that is nitrodeck itself would loop forever
_DEPTH_ENV = "NITRODECK_PASSTHROUGH"

#: nitro-cli's subcommands this module answers (``console`` and ``describe-eif`` are also nitrodeck's
#: own names: cmd_lifecycle hands them here when they are spelled the nitro-cli way)
COMMANDS = (
    "describe-enclaves", "run-enclave", "terminate-enclave", "describe-eif", "build-enclave",
    "console", "pcr", "explain", "sign-eif",
)


class ChildFailed(NitrodeckError):
    """The backend exited non-zero; it has already printed its own error (nitro-cli's ``[ Exx ]``)."""

    code = "ND-BACKEND-EXIT"

    def __init__(self, status: int, where: str) -> None:
        super().__init__(f"{where} exited with status {status}", where=where)
        self.status = status
        # nitro-cli exits with its error number (E26 -> 26): keep that as the audit line's code
        self.code = f"E{status:02d}" if 0 < status < 100 else f"exit-{status}"


#: how much of a teed command's stdout is kept to read its JSON from
MAX_TEED = 1024 * 1024


def _json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects at the start of ``text``, one after another (nitro-cli prints one per enclave)."""
    decoder = json.JSONDecoder()
    out: list[dict[str, Any]] = []
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        try:
            value, at = decoder.raw_decode(text, at)
        except ValueError:
            return out
        if isinstance(value, dict):
            out.append(value)
        elif isinstance(value, list):
            out.extend(v for v in value if isinstance(v, dict))


def _flag_value(args: list[str], flag: str) -> str | None:
    for i, word in enumerate(args):
        if word == flag and i + 1 < len(args):
            return args[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


class Passthrough:
    """Runs one nitro-cli command on the backend with the caller's stdin/stdout/stderr.

    ``read_only`` and ``audit`` make :func:`mutating` treat it like a Lifecycle.
    """

    def __init__(self, backend: Backend, *, read_only: bool, audit: AuditLog | None = None) -> None:
        self.backend = backend
        self.read_only = read_only
        #: core.backends.real.ReadOnlyReason when known: a device reason refuses only launch/terminate
        self.read_only_reason: Any = None
        self.audit = audit or AuditLog()
        #: run-enclave --config: the config's eif_path (absolute), for the journal, and the command as
        #: the caller gave it (the audit line names their config file, not the resolved copy run)
        self.config_eif_path: str | None = None
        self.shown_args: list[str] | None = None

    def _env(self) -> dict[str, str]:
        """The backend's environment: ours, marked as nitrodeck's child, and NITRODECK_READ_ONLY=1 when
        nothing may change (the flag or the environment; a device reason still builds), so that nitro-emu
        writes nothing either."""
        reason = self.read_only_reason
        changes_nothing = bool(reason.refuses_everything) if reason is not None else self.read_only
        return {**(backend_env(changes_nothing) or os.environ), _DEPTH_ENV: "1"}

    def run(self, args: list[str]) -> int:
        if os.environ.get(_DEPTH_ENV) and not self.backend.is_emulator:
            raise UsageError(
                "the 'nitro-cli' on PATH is nitrodeck itself",
                where=args[0],
                hint="put the real nitro-cli first on PATH, or use --backend emulator",
            )
        note_command([self.backend.display_name, *(self.shown_args or args)])
        env = self._env()
        try:
            # Same process group: Ctrl-C reaches the backend too, as it would reach nitro-cli.
            import subprocess  # (and below) only the commands that pass through to the backend

            return subprocess.call([*self.backend.argv, *args], env=env)
        except OSError as exc:
            raise UsageError(
                f"cannot run {self.backend.display_name}: {exc.strerror or exc}",
                where=args[0],
                hint="install aws-nitro-enclaves-cli, or use --backend emulator",
            ) from None

    def _checked(self, args: list[str]) -> int:
        status = self.run(args)
        if status != 0:
            raise ChildFailed(status, args[0])
        return 0

    def _teed(self, args: list[str]) -> tuple[int, list[dict[str, Any]]]:
        """Like :meth:`run`, but stdout passes through this process, so the JSON objects the backend
        printed (up to 1 MiB; a console attached after them only passes through) can be journaled."""
        note_command([self.backend.display_name, *(self.shown_args or args)])
        env = self._env()
        seen = bytearray()
        try:
            import subprocess

            proc = subprocess.Popen([*self.backend.argv, *args], env=env, stdout=subprocess.PIPE)
        except OSError as exc:
            raise UsageError(
                f"cannot run {self.backend.display_name}: {exc.strerror or exc}",
                where=args[0],
                hint="install aws-nitro-enclaves-cli, or use --backend emulator",
            ) from None
        assert proc.stdout is not None
        out = sys.stdout.buffer
        while chunk := proc.stdout.read1(64 * 1024):
            out.write(chunk)
            out.flush()
            if len(seen) < MAX_TEED:
                seen += chunk[: MAX_TEED - len(seen)]
        return proc.wait(), _json_objects(seen.decode("utf-8", "replace"))

    # The mutating ones: refused under read-only before the backend runs; audited; launches and
    # terminates go to the lifecycle journal as nitrodeck's own do, so that other nitrodeck processes
    # neither miss an exit of these enclaves nor take a terminate for one.
    @mutating("launch")
    def run_enclave(self, args: list[str]) -> int:
        status, objects = self._teed(args)
        journal = Journal()
        eif_path = _flag_value(args, "--eif-path") or self.config_eif_path
        if status != 0:
            journal.append("launch-failed", eif_path=eif_path, name=_flag_value(args, "--enclave-name"),
                           code=f"E{status:02d}" if 0 < status < 100 else f"exit-{status}")
            raise ChildFailed(status, args[0])
        for run in objects[:1]:
            journal.append(
                "launched",
                enclave_id=run.get("EnclaveID"),
                name=run.get("EnclaveName"),
                eif_path=eif_path,
                cid=run.get("EnclaveCID"),
                cpu_ids=run.get("CPUIDs"),
                memory_mib=run.get("MemoryMiB"),
                debug=("--debug-mode" in args) or None,
                backend=self.backend.name,
            )
        return 0

    @mutating("terminate")
    def terminate_enclave(self, args: list[str]) -> int:
        journal = Journal()
        wanted = _flag_value(args, "--enclave-id")
        with journal.terminating([wanted] if wanted else []):
            status, objects = self._teed(args)
            for done in objects:
                if done.get("Terminated") and done.get("EnclaveID"):
                    launch = journal.launch_of(str(done["EnclaveID"]))
                    journal.append(
                        "terminated",
                        enclave_id=done["EnclaveID"],
                        name=done.get("EnclaveName") or (launch.name if launch else None),
                        eif_path=launch.eif_path if launch else None,
                        pcr0=launch.pcr0 if launch else None,
                    )
        if status != 0:
            raise ChildFailed(status, args[0])
        return 0

    @mutating("build")
    def build_enclave(self, args: list[str]) -> int:
        return self._checked(args)

    @mutating("sign-eif")
    def sign_eif(self, args: list[str]) -> int:
        return self._checked(args)


_MUTATING = {
    "run-enclave": Passthrough.run_enclave,
    "terminate-enclave": Passthrough.terminate_enclave,
    "build-enclave": Passthrough.build_enclave,
    "sign-eif": Passthrough.sign_eif,
}


def argv_of(args: argparse.Namespace, command: str) -> list[str]:
    """The nitro-cli command line back from parsed arguments, flags in the order they are declared."""
    out = [command]
    for flag, dest, kind in _FLAGS[command]:
        value = getattr(args, dest, None)
        if value is None or value is False:
            continue
        if kind == "flag":
            out.append(flag)
        elif kind == "many":
            out += [flag, *(str(v) for v in value)]
        else:
            out += [flag, str(value)]
    return out


#: run-enclave --config files larger than this pass through as they are (the backend refuses them)
MAX_CONFIG = 64 * 1024


def resolved_config(path: str) -> tuple[str, str] | None:
    """run-enclave --config FILE whose ``eif_path`` is relative: a private copy of FILE with ``eif_path``
    made absolute against the caller's cwd, and that absolute path; None when FILE needs no copy (the
    path is absolute already) or cannot be read as a JSON object (the backend then reports nitro-cli's
    own E19 or E17 for it). Every other key is kept as written, in its order."""
    from core.files import read_limited

    try:
        data = json.loads(read_limited(path, MAX_CONFIG, where="--config").decode("utf-8"))
    except (NitrodeckError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    eif_path = data.get("eif_path") if isinstance(data, dict) else None
    if not isinstance(eif_path, str) or not eif_path or os.path.isabs(eif_path):
        return None
    try:
        data["eif_path"] = resolve_path(eif_path)
    except argparse.ArgumentTypeError:
        return None
    import tempfile

    fd, copy = tempfile.mkstemp(prefix="nitrodeck-run-enclave-", suffix=".json")  # 0600
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False)
    return copy, data["eif_path"]


def run(args: argparse.Namespace, command: str | None = None) -> int:
    command = command or args.compat_command
    backend = select_backend(getattr(args, "backend", None))
    # the flag, $NITRODECK_READ_ONLY, or a missing/unwritable device (which refuses launch/terminate only)
    reason = Lifecycle.reason_for(backend, bool(getattr(args, "read_only", False)))
    passthrough = Passthrough(backend, read_only=reason is not None)
    passthrough.read_only_reason = reason  # what @mutating reads, as on a Lifecycle
    copy = None
    if command == "run-enclave" and getattr(args, "nc_config", None) and reason is None:
        # the config's eif_path, like --eif-path, must not reach the backend relative: nitro-emu's
        # enclave process (and a backend run elsewhere) would open it against another folder
        copy = resolved_config(args.nc_config)
        if copy is not None:
            passthrough.shown_args = argv_of(args, command)
            args.nc_config = copy[0]
            passthrough.config_eif_path = copy[1]
    argv = argv_of(args, command)
    method = _MUTATING.get(command)
    try:
        return method(passthrough, argv) if method else passthrough.run(argv)
    except ChildFailed as failed:
        return failed.status
    finally:
        if copy is not None:
            with contextlib.suppress(OSError):
                os.unlink(copy[0])


# --- the parsers: nitro-cli's flags, each with nitro-cli's own help line ---------------------------------

# command -> [(flag, dest, kind)]; kind: "value", "flag" (store_true), "many" (nargs="+")
_FLAGS: dict[str, list[tuple[str, str, str]]] = {}


def _add(p: argparse.ArgumentParser | Any, command: str, flag: str, help: str, *, kind: str = "value",
         type: Any = None, required: bool = False, metavar: str | None = None) -> None:
    dest = "nc_" + flag.lstrip("-").replace("-", "_")
    if kind == "flag":
        p.add_argument(flag, dest=dest, action="store_true", help=help)
    else:
        p.add_argument(flag, dest=dest, type=type, required=required, help=help,
                       metavar=metavar or flag.lstrip("-").upper().replace("-", "_"),
                       nargs="+" if kind == "many" else None)
    _FLAGS.setdefault(command, []).append((flag, dest, kind))


def _hidden_globals(p: argparse.ArgumentParser) -> None:
    # Also accepted after the subcommand; SUPPRESS keeps the main parser's value when absent.
    p.add_argument("--backend", choices=CHOICES, default=argparse.SUPPRESS,
                   help="nitro-cli backend (also before the subcommand)")
    p.add_argument("--read-only", action="store_true", default=argparse.SUPPRESS,
                   help="refuse every mutating command (also before the subcommand)")


# ``console`` and ``describe-eif`` are nitrodeck's own subcommands too (console/cmd_lifecycle.py), which
# declares these flags with these dests and hands the nitro-cli spelling here.
_FLAGS["console"] = [("--enclave-id", "enclave_id", "value"), ("--enclave-name", "enclave_name", "value"),
                     ("--disconnect-timeout", "disconnect_timeout", "value")]
_FLAGS["describe-eif"] = [("--eif-path", "eif_path", "value")]


def register(subparsers: Any) -> None:
    def parser(name: str, help: str) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, help=f"nitro-cli {name}: {help}",
                                  description=f"nitro-cli's `{name}`, same flags and output: {help}.")
        _hidden_globals(p)
        p.set_defaults(func=run, compat_command=name)
        return p

    c = "run-enclave"
    p = parser(c, "starts a new enclave")
    cpus = p.add_mutually_exclusive_group()
    _add(cpus, c, "--cpu-ids", "List of CPU IDs provided for the enclave", kind="many")
    _add(cpus, c, "--cpu-count", "Number of CPUs to use for the enclave")
    _add(p, c, "--memory", "Memory to allocate for the enclave in MB")
    _add(p, c, "--eif-path", "Path pointing to a prebuilt Eif image", type=resolve_path)
    _add(p, c, "--enclave-cid", "CID to be used for the newly started enclave")
    _add(p, c, "--debug-mode", "Starts enclave in debug-mode", kind="flag")
    _add(p, c, "--attach-console", "Attach the enclave console (implies debug-mode)", kind="flag")
    _add(p, c, "--enclave-name", "Custom name assigned to the enclave by the user")
    _add(p, c, "--config", "Config is used to read enclave settings from JSON file", type=resolve_path,
         metavar="JSON_CONFIG")

    c = "describe-enclaves"
    p = parser(c, "returns a list of the running enclaves")
    _add(p, c, "--metadata", "Adds EIF metadata to the output", kind="flag")

    c = "terminate-enclave"
    p = parser(c, "terminates an enclave")
    which = p.add_mutually_exclusive_group(required=True)
    _add(which, c, "--enclave-id", "Enclave ID, used to uniquely identify an enclave")
    _add(which, c, "--enclave-name", "Enclave name set by the user")
    _add(which, c, "--all", "Terminate all running enclaves", kind="flag")

    c = "build-enclave"
    p = parser(c, "builds an enclave image and saves it to a file")
    _add(p, c, "--docker-uri", "Uri pointing to an existing docker container or to be created locally")
    _add(p, c, "--docker-dir", "Local path to a directory containing a Dockerfile", type=resolve_path)
    _add(p, c, "--output-file", "Location where the Enclave Image should be saved", type=resolve_path,
         required=True)
    _add(p, c, "--signing-certificate", "Local path to developer's X509 signing certificate", type=resolve_path)
    _add(p, c, "--private-key", "Local path or KMS key ARN of the signing key", type=key_or_path)
    _add(p, c, "--name", "Name for enclave image", metavar="IMAGE_NAME")
    _add(p, c, "--version", "Version of the enclave image", metavar="IMAGE_VERSION")
    _add(p, c, "--metadata", "Path to JSON containing the custom metadata provided by the user",
         type=resolve_path)
    # nitro-emu's own build sources (refused by real nitro-cli), for scripts written against nitro-emu
    _add(p, c, "--rootfs", "(emulator only) build from a root filesystem folder", type=resolve_path)
    _add(p, c, "--cmd", "(emulator only) command of the image, e.g. \"python3 -m app\"")
    _add(p, c, "--image-tar", "(emulator only) build from a `docker save` / OCI tarball", type=resolve_path)

    c = "pcr"
    p = parser(c, "return the PCR hash value of the given input")
    which = p.add_mutually_exclusive_group(required=True)
    _add(which, c, "--input", "Local path to the input file to be measured", type=resolve_path)
    _add(which, c, "--signing-certificate", "Local path to the X509 signing certificate (gives PCR8)",
         type=resolve_path)

    c = "explain"
    p = parser(c, "display detailed information about an error returned by a nitro-cli command")
    _add(p, c, "--error-code", "Error code, e.g. E26", required=True, metavar="ERROR_CODE")

    c = "sign-eif"
    p = parser(c, "signs an existing enclave image file (replacing any signature)")
    _add(p, c, "--eif-path", "Path pointing to a prebuilt Eif image", type=resolve_path, required=True)
    _add(p, c, "--signing-certificate", "Local path to developer's X509 signing certificate", type=resolve_path,
         required=True)
    _add(p, c, "--private-key", "Local path or KMS key ARN of the signing key", type=key_or_path, required=True)


def version_lines(backend_flag: str | None) -> list[str]:
    """`nitrodeck --version`: nitrodeck's version, the backend, and the real nitro-cli's own version line."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        mine = version("nitrodeck")
    except PackageNotFoundError:
        mine = "unknown"
    lines = [f"nitrodeck {mine}"]
    try:
        backend = select_backend(backend_flag)
    except NitrodeckError as err:
        return [*lines, f"backend: none ({err.message})"]
    lines.append(f"backend: {backend.name} ({backend.display_name}, {backend.chosen_by})")
    if not backend.is_emulator:
        from core.backends.driver import NitroCli

        try:
            lines.append(f"nitro-cli: {NitroCli(backend).version()}")
        except NitrodeckError as err:
            lines.append(f"nitro-cli: unavailable ({err.message})")
    return lines


def print_version(backend_flag: str | None) -> int:
    print("\n".join(version_lines(backend_flag)), file=sys.stdout)
    return 0
