"""Run nitro-cli (or nitro-emu) and turn what it prints into core.models dataclasses or typed errors.

Every call is an argv list (never a shell), runs in its own session with a deadline, and on timeout
the whole process group is killed so no half-started helper survives. stdout and stderr are read
with a size cap: a runaway tool cannot make nitrodeck eat memory. The environment passes through
(the emulator sees the same NITRODECK_HOME as nitrodeck); a read-only driver adds
``NITRODECK_READ_ONLY=1`` so that nitro-emu writes nothing either (core.backends.real.backend_env).

nitro-cli reports failures as ``[ Exx ] message`` blocks on stderr; they become
:class:`core.errors.NitroCliError` with an operator hint. run-enclave failures arrive wrapped in E39
("Enclave process connection failure"); the inner code is the one that says what went wrong, so
that is the code reported (the E39 text stays in ``stderr``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shlex
import signal
import threading
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from core import home
from core.backends.base import AnswerAbandoned, Backend
from core.backends.real import backend_env
from core.backends.registry import select_backend
from core.errors import InputTooLarge, NitroCliError, NitrodeckError, UsageError
from core.models import (
    BuildRequest,
    BuildResult,
    EifInfo,
    EmulatorDetail,
    EnclaveInfo,
    LaunchRequest,
    Measurements,
    OutputFormatError,
    RunInfo,
    TerminateInfo,
)

if TYPE_CHECKING:
    import asyncio
    import subprocess

T = TypeVar("T")

MAX_OUTPUT = 16 * 1024 * 1024
MAX_CONSOLE_LINE = 64 * 1024
DEFAULT_TIMEOUT = 120.0
BUILD_TIMEOUT = 1800.0
RUN_TIMEOUT = 300.0
# After the tool exits, a daemonized child may still hold our pipes open; wait this long for EOF.
_EOF_GRACE = 1.0

CONSOLE_PREAMBLE = ("Connecting to the console for enclave", "Successfully connected to the console")


class DriverTimeout(NitrodeckError):
    code = "ND-TIMEOUT"
    exit_status = 124


class DriverCancelled(NitrodeckError):
    """The caller asked to stop (``NitroCli.cancel`` was set): the command's process group was killed."""

    code = "ND-CANCELLED"
    exit_status = 130


class BackendUnavailable(NitrodeckError):
    code = "ND-BACKEND"
    exit_status = 127


class CommandFailed(NitrodeckError):
    """The tool failed without a ``[ Exx ]`` block (e.g. a usage error): keep its exit status."""

    code = "ND-COMMAND"

    def __init__(self, message: str, *, exit_status: int, stderr: str = "", where: str | None = None) -> None:
        super().__init__(message, where=where)
        self.exit_status = exit_status or 1
        self.stderr = stderr


@dataclass(frozen=True)
class CommandRecord:
    """One tool invocation, for the TUI's command log and for the audit log."""

    command: str  # e.g. "nitro-cli run-enclave --eif-path x.eif --memory 512 --cpu-count 2"
    argv: list[str]
    exit_code: int | None  # None: killed on timeout
    duration: float
    ok: bool
    error_code: str | None = None


@dataclass
class Completed:
    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str


# --- error parsing ----------------------------------------------------------------------------------

_BLOCK = re.compile(r"^\[ (E\d{2,3}) \] ?", re.MULTILINE)
_LOG_PATH = re.compile(r'error log found at "([^"\n]{1,4096})"')
# Where a block's own message ends: the boilerplate that nitro-cli appends after it.
_MESSAGE_END = re.compile(r"\n\s*\n|\nFor more details|\nIf you open a support ticket|\nFailed connections:|\nBacktrace:")
_E26_MIN = re.compile(r"minimum memory should be (\d+) MB")
_FAILED_CONNECTIONS = re.compile(r"^Failed connections: (\d{1,6})$", re.MULTILINE)


@dataclass(frozen=True)
class ErrorBlock:
    code: str
    message: str
    log_path: str | None


def parse_error_blocks(stderr: str) -> list[ErrorBlock]:
    """Every ``[ Exx ]`` block in order of appearance (inner failures come before E39)."""
    if len(stderr) > MAX_OUTPUT:
        raise InputTooLarge(f"stderr of {len(stderr)} characters exceeds {MAX_OUTPUT}", where="nitro-cli stderr")
    matches = list(_BLOCK.finditer(stderr))
    blocks = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(stderr)
        body = stderr[match.end() : end]
        cut = _MESSAGE_END.search(body)
        message = (body[: cut.start()] if cut else body).strip()
        log = _LOG_PATH.search(body)
        blocks.append(ErrorBlock(match.group(1), message, log.group(1) if log else None))
    return blocks


# Hints chosen by the error log's detail before hint_for's by code: one code (E29, E48, E50) covers many
# causes. hint_for reads the detail too (full cores, an empty pool, NUMA); these are the others.
_DOCKER_DOWN = re.compile(
    r"cannot reach the docker engine|cannot connect to the docker daemon|docker\.sock|"
    r"error while fetching server api version|is the docker daemon running|docker daemon is not running",
    re.I,
)
# The driver's refusals as nitro-cli writes them into the error log (resource_manager.rs do_ioctl: one
# text per NE_ERR_* errno), the constant names, and nitro-emu's own words for what the hypervisor refuses.
_DETAIL_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"CID \d+ is in use|CID .{0,40}already", re.I),
     "the enclave CID is already used by a running enclave: choose another --cid, or leave it out to get a free one"),
    (re.compile(r"well-known CID|parent VM CID|INVALID_ENCLAVE_CID", re.I),
     "the enclave CID is reserved (0-3 are well-known CIDs, and the parent instance has its own): choose "
     "another --cid of 4 or more, or leave it out to get a free one"),
    (re.compile(r"VCPU_ALREADY_USED|vCPU is already used", re.I),
     "a requested CPU is held by a running enclave: pick free CPUs (see `nitrodeck status`) or use --cpu-count"),
    (re.compile(r"VCPU_NOT_IN_CPU_POOL|VCPU_INVALID_CPU_CORE|INVALID_VCPU\b|not available in the CPU pool|"
                r"core ID is invalid for the CPU pool|out of range of the available CPUs", re.I),
     "a requested CPU is not in the enclave CPU pool: see the pool in `nitrodeck status`"),
    (re.compile(r"ENCLAVE_MEM_MIN_SIZE|memory size is lower than the minimum", re.I),
     "enclave memory is below the minimum: launch with a larger --memory"),
    (re.compile(r"MEM_NOT_HUGE_PAGE|INVALID_PAGE_SIZE|INVALID_MEM_REGION|MEM_REGION_ALREADY_USED|MEM_MAX_REGIONS|"
                r"not backed by contiguous physical huge page|not backed by page\(s\) multiple of 2 MiB|"
                r"memory region's (size|address)|memory region is already used|maximum number of memory regions",
                re.I),
     "the driver refused the enclave's memory: it must come from the hugepages the allocator reserved; "
     "check memory_mib in allocator.yaml, restart the allocator, and launch with --memory a multiple of 2 MiB"),
    (re.compile(r"pools unusable|allocator", re.I),
     "the allocator configuration is unusable: check allocator.yaml and `nitrodeck status` (allocator_error)"),
)


def detail_hint(code: str, detail: str | None, backend: Backend) -> str | None:
    if not detail:
        return None
    if _DOCKER_DOWN.search(detail):
        return (
            "the Docker daemon is unreachable: start it (`sudo systemctl start docker`) or point DOCKER_HOST at "
            "a running one, then build again"
        )
    for pattern, hint in _DETAIL_HINTS:
        if pattern.search(detail):
            return hint
    return None


def _allocator_file(backend: Backend) -> str:
    if backend.is_emulator:
        return f"{home.emulator_etc() / 'allocator.yaml'} (the emulator's allocator.yaml)"
    return "/etc/nitro_enclaves/allocator.yaml"


_DOCKER_ERROR = re.compile(r"^Docker error: (.{1,300})$", re.MULTILINE)
_MAX_ERR_LOG = 64 * 1024


def error_log_subactions(path: str | None) -> list[str]:
    """The subactions of a nitro-cli error log, outermost first (the last is the root cause).

    The log is ``  Action: ...\n  Subactions:\n    outer\n    ...\n    root\n  Root error file: ...``
    (document_errors.rs ``construct_backtrace``). Missing or unreadable logs give [].
    """
    if not path:
        return []
    try:
        with open(path, "rb") as fh:
            text = fh.read(_MAX_ERR_LOG).decode("utf-8", "replace")
    except OSError:
        return []
    return subactions_of(text)


#: nitro-emu's block when its err log could not be written (full disk): the log's text follows
_UNWRITTEN_LOG = "The error log could not be written"


def subactions_of(text: str) -> list[str]:
    """The ``Subactions:`` lines of an err log's text (or of a block that carries that text)."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.strip() == "Subactions:":
            inside = True
            continue
        if inside:
            if line.startswith("    "):
                out.append(line.strip())
            else:
                break
    return out


def _docker_hint(kind: str) -> str:
    kind = kind.strip()
    if kind.startswith("ConnectionError"):
        return ("nitro-cli could not connect to the Docker daemon: start Docker, check DOCKER_HOST (nitro-cli "
                "reads it too) and that this user may use the daemon's socket")
    if kind.startswith("PullError"):
        return ("nitro-cli could not get the image from Docker: check that the Docker daemon runs (`docker info`), "
                "that the URI is right, and the registry credentials (`docker login`) if it must be pulled")
    if kind.startswith("BuildError"):
        return ("the Docker daemon did not build --docker-dir: check that it runs (`docker info`) and that the "
                "folder's Dockerfile builds with `docker build`")
    if kind.startswith("CredentialsError"):
        return "nitro-cli could not read registry credentials: check ~/.docker/config.json or `docker login`"
    if kind.startswith(("InspectError", "UnsupportedEntryPoint")):
        return ("Docker could not describe the image (it needs a CMD or ENTRYPOINT): check it with "
                "`docker image inspect`, and that the daemon runs")
    return "nitro-cli's Docker step failed: check that the Docker daemon runs and the image exists"


def hint_for(
    code: str,
    message: str,
    backend: Backend,
    allocating: bool = True,
    stderr: str = "",
    detail: str | None = None,
    command: str | None = None,
) -> str | None:
    """What an operator should do next, from nitro-cli's own words: the block, its stderr lines (a
    ``Docker error:``) and the root cause in its error log. None when the message says it all.
    ``allocating``: run-enclave had printed "Start allocating memory..." before the failure.
    ``command`` is the nitro-cli subcommand that failed: a hint never sends the operator back to it."""
    if _NO_SPACE.search("\n".join((message, detail or "", stderr))):
        return "the disk is full: free space (the output folder, or NITRODECK_HOME under the emulator) and retry"
    if code == "E35" and command == "describe-eif":
        return "this file is not a valid EIF (the error log names the defect): rebuild it with `nitrodeck build`"
    if code == "E19" and command == "describe-eif":
        return "the EIF could not be opened: check the path, that it is a regular file, and its permissions"
    restart = (
        "then `nitro-emu restart-allocator` (it reads the file when it starts, as the service does)"
        if backend.is_emulator
        else "then `sudo systemctl restart nitro-enclaves-allocator.service`"
    )
    low = (detail or "").lower()
    docker = _DOCKER_ERROR.search(stderr)
    if docker and code in ("E48", "E49", "E50"):
        return _docker_hint(docker.group(1))
    if code == "E26" and "greater than 0 MB" in message:
        # ResourceAllocator::new: --memory 0 with an empty EIF file (4x its size is no minimum)
        return "--memory is 0: give the enclave memory (and check the EIF file, which is empty)"
    if code == "E26":
        m = _E26_MIN.search(message)
        need = f" ({m.group(1)} MiB for this EIF)" if m else ""
        return f"enclave memory must be at least 4x the EIF file size{need}: launch with a larger --memory"
    if code == "E27":
        return (
            f"not enough hugepage memory is reserved: raise memory_mib in {_allocator_file(backend)}, {restart}; "
            "running enclaves also hold hugepages (see `nitrodeck status`)"
        )
    if code in ("E20", "E21", "E22"):
        what = {
            "E20": "a CPU ID is listed twice in --cpu-ids",
            "E21": "a requested CPU is not in the enclave CPU pool",
            "E22": "the enclave CPU pool has fewer CPUs than requested",
        }[code]
        return (
            f"{what}: the pool is set by cpu_count or cpu_pool in {_allocator_file(backend)} ({restart}); "
            "running enclaves hold CPUs too (see `nitrodeck status`)"
        )
    if code == "E11":
        return "no enclave with that ID is running: list them with `nitrodeck describe`"
    if code == "E58":
        return "no enclave (or more than one) has that name: use the enclave ID from `nitrodeck describe`"
    if code == "E44":
        return "the console is only readable for enclaves launched with --debug-mode"
    if code == "E36":
        return (
            "the enclave did not finish booting: read its console (launch with --debug-mode, then "
            "`nitrodeck console ENCLAVE --log`) and check the image's command/entrypoint"
        )
    if code == "E19":
        if "nitro_enclaves/parameters/ne_cpus" in message or "cpu pool file" in low:
            return ("the enclave CPU pool file is missing: the Nitro Enclaves driver is not loaded "
                    f"(`sudo systemctl enable --now nitro-enclaves-allocator.service`), {restart}")
        if "/dev/nitro_enclaves" in message or "nitro_enclaves" in low:
            return ("the Nitro Enclaves device could not be opened: the driver must be loaded and this user in "
                    "the device's group (`sudo usermod -aG ne $USER`, then log in again)")
        return "a file could not be opened: check the path and its permissions"
    if code == "E35":
        return "the EIF could not be loaded: check it with `nitrodeck describe-eif`; on Nitro, also that hugepages are reserved"
    if code == "E48":
        return "building the EIF failed: check the image source and the blobs (NITRO_CLI_BLOBS)"
    if code == "E49":
        return "the Docker image build failed: check --docker-dir (a Dockerfile) and that the Docker engine runs"
    if code == "E50":
        return "the Docker image could not be pulled: build it locally or check registry access"
    if code == "E29":
        if "no cpus are available in the pool" in low:
            return (
                "every CPU of the enclave pool is held by running enclaves (the driver had none left): terminate "
                f"one, or enlarge the pool with cpu_count or cpu_pool in {_allocator_file(backend)} ({restart})"
            )
        if "full cpu cores" in low:
            return "the driver needs full CPU cores (all hyperthreads of a core): use an even --cpu-count"
        if "numa" in low:
            return "the enclave's memory and CPUs must be on one NUMA node: reserve hugepages on the pool's node"
        if detail and allocating:
            return f"the driver refused the enclave setup: {detail}"
        if not allocating:
            # NE_CREATE_VM failed: nitro-cli had not started allocating memory yet
            return (
                "no enclave could be created: every enclave slot is taken or no CPU core of the pool is free; "
                "terminate an enclave (`nitrodeck describe`) or enlarge the pool"
            )
        # one code for every later driver refusal (CID in use, CPU busy, half a core...): only the
        # error log's detail can say which (detail_hint), so no guess here
        return "the Nitro Enclaves driver refused the enclave setup: the detail (from the error log) says why"
    if code == "E03":
        return "an argument is not a valid value (memory in MiB, CPU IDs and counts, a CID of 4 or more)"
    if code == "E57":
        return "the signing certificate is not a PEM X.509 certificate"
    if code == "E60":
        return "signing failed: check the key and certificate paths (a KMS key ARN needs fresh AWS credentials)"
    if code == "E59" and "signature checker" in low:
        # PcrSignatureChecker::from_eif could not walk the file's headers: not an EIF (or a folder)
        return "the EIF could not be read (not an EIF file, or a folder): check the path and the file with `nitrodeck describe-eif`"
    if code == "E59":
        return (
            "the EIF's signature does not check out (it covers another PCR0, or the certificate is invalid or "
            "expired; details in the error log): re-sign the EIF with `nitro-cli sign-eif`"
        )
    return None


def error_from_output(
    argv: list[str], stderr: str, exit_code: int, backend: Backend, stdout: str = ""
) -> NitrodeckError:
    blocks = parse_error_blocks(stderr)
    if not blocks:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        # a usage error (clap, argparse) says what is wrong on its `error:` line, not on the help footer
        last = next((ln for ln in reversed(lines) if ln.lstrip().lower().startswith("error")), None) or (
            lines[-1] if lines else ""
        )
        return CommandFailed(
            f"{backend.display_name} exited with status {exit_code}" + (f": {last[:500]}" if last else ""),
            exit_status=exit_code,
            stderr=stderr,
            where=command_text(backend, _strip_prefix(backend, argv)),
        )
    inner = next((b for b in blocks if b.code != "E39"), blocks[0])
    log_path = inner.log_path or next((b.log_path for b in blocks if b.log_path), None)
    before = stderr.split(f"[ {inner.code} ]", 1)[0]
    subactions = error_log_subactions(inner.log_path or log_path)
    if not subactions and _UNWRITTEN_LOG in stderr:
        # full disk: nitro-emu printed the err log's text instead of a path, so the cause is still known
        subactions = subactions_of(stderr[: MAX_OUTPUT].split(_UNWRITTEN_LOG, 1)[1][:_MAX_ERR_LOG])
    detail = subactions[-1] if subactions else None
    message = inner.message
    docker = _DOCKER_ERROR.search(stderr)
    if docker and inner.code in ("E48", "E49", "E50"):
        message = f"{message}\nDocker error: {docker.group(1).strip()}"  # nitro-cli's own line, not hidden
    return NitroCliError(
        code=inner.code,
        message=message,
        # the error log's detail picks the hint first (one code covers many causes: E29, E48, E50)
        hint=detail_hint(inner.code, detail, backend)
        or hint_for(inner.code, inner.message, backend, allocating="Start allocating memory..." in before,
                    stderr=stderr, detail=detail, command=_subcommand(backend, argv)),
        log_path=log_path,
        argv=list(argv),
        stderr=stderr,
        stdout=stdout,
        detail=detail,
    )


def parse_json(text: str, where: str) -> Any:
    if len(text) > MAX_OUTPUT:
        raise InputTooLarge(f"output of {len(text)} characters exceeds {MAX_OUTPUT}", where=where)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise OutputFormatError(f"not valid JSON: {exc}"[:300], where=where) from None


def typed(where: str, build: Callable[[], T]) -> T:
    """Run a model constructor; stray ValueError/TypeError (e.g. a CPU ID "x") become OutputFormatError."""
    try:
        return build()
    except (ValueError, TypeError, OverflowError) as exc:
        raise OutputFormatError(f"unexpected value: {exc}"[:300], where=where) from None


def parse_enclaves(text: str) -> list[EnclaveInfo]:
    data = parse_json(text, "describe-enclaves")
    if not isinstance(data, list):
        raise OutputFormatError("expected a JSON array", where="describe-enclaves")
    return typed(
        "describe-enclaves",
        lambda: [EnclaveInfo.from_json(item, f"describe-enclaves[{i}]") for i, item in enumerate(data)],
    )


def parse_emulator_details(text: str) -> list[EmulatorDetail]:
    """``nitro-emu emulator-describe``'s stdout (a JSON array)."""
    data = parse_json(text, "emulator-describe")
    if not isinstance(data, list):
        raise OutputFormatError("expected a JSON array", where="emulator-describe")
    return typed(
        "emulator-describe",
        lambda: [EmulatorDetail.from_json(item, f"emulator-describe[{i}]") for i, item in enumerate(data)],
    )


def merge_emulator_details(enclaves: list[EnclaveInfo], details: list[EmulatorDetail]) -> list[EnclaveInfo]:
    by_id = {d.enclave_id: d for d in details}
    for enclave in enclaves:
        detail = by_id.get(enclave.enclave_id)
        if detail is not None:
            enclave.eif_path = detail.eif_path
            enclave.isolation = detail.isolation
    return enclaves


def parse_run(text: str) -> RunInfo:
    data = parse_json(text, "run-enclave")
    return typed("run-enclave", lambda: RunInfo.from_json(data))


def parse_eif(text: str) -> EifInfo:
    data = parse_json(text, "describe-eif")
    return typed("describe-eif", lambda: EifInfo.from_json(data))


def parse_terminate(text: str) -> TerminateInfo:
    data = parse_json(text, "terminate-enclave")
    return typed("terminate-enclave", lambda: TerminateInfo.from_json(data))


def parse_terminate_all(text: str) -> list[TerminateInfo]:
    """nitro-cli >= 1.x prints an array; older releases (and the user guide) show one bare object."""
    data = parse_json(text, "terminate-enclave --all")
    if isinstance(data, dict):
        return [TerminateInfo.from_json(data, "terminate-enclave --all")]
    if not isinstance(data, list):
        raise OutputFormatError("expected a JSON array or object", where="terminate-enclave --all")
    return typed(
        "terminate-enclave --all",
        lambda: [TerminateInfo.from_json(item, f"terminate-enclave --all[{i}]") for i, item in enumerate(data)],
    )


def parse_build(text: str, output_file: str) -> BuildResult:
    data = parse_json(text, "build-enclave")
    if not isinstance(data, dict) or not isinstance(data.get("Measurements"), dict):
        raise OutputFormatError("expected an object with Measurements", where="build-enclave")
    meas = typed("build-enclave", lambda: Measurements.from_json(data["Measurements"], "build-enclave.Measurements"))
    return BuildResult(meas, output_file)


def parse_pcr(text: str) -> str:
    data = parse_json(text, "pcr")
    if isinstance(data, dict):
        for key in ("PCR", "PCR8"):
            value = data.get(key)
            if isinstance(value, str):
                return value.lower()
    raise OutputFormatError("expected {\"PCR\": ...} or {\"PCR8\": ...}", where="pcr")


_NO_SPACE = re.compile(r"No space left on device|ENOSPC|disk is full", re.I)


def _subcommand(backend: Backend, argv: list[str]) -> str | None:
    args = _strip_prefix(backend, argv)
    return next((a for a in args if not a.startswith("-")), None)


def _strip_prefix(backend: Backend, argv: list[str]) -> list[str]:
    prefix = list(backend.argv)
    return argv[len(prefix) :] if argv[: len(prefix)] == prefix else argv


def command_text(backend: Backend, args: list[str]) -> str:
    """The command line as an operator would type it (display name, not the interpreter path)."""
    return shlex.join([backend.display_name, *args])


# --- argv builders ------------------------------------------------------------------------------------


def build_args(req: BuildRequest, backend: Backend) -> list[str]:
    emulator_only = {
        "--rootfs": req.rootfs,
        "--cmd": req.cmd,
        "--image-tar": req.image_tar,
        "--env": req.env or None,
        "--build-time": req.build_time,
    }
    used = [flag for flag, value in emulator_only.items() if value]
    if used and not backend.is_emulator:
        raise UsageError(
            f"{', '.join(used)} {'is' if len(used) == 1 else 'are'} only supported by the emulator",
            where="build",
            hint="real nitro-cli builds from a Docker image: use --docker-uri (and --docker-dir)",
        )
    sources = [s for s in (req.docker_uri, req.rootfs, req.image_tar) if s]
    if len(sources) != 1:
        raise UsageError(
            "give exactly one image source: --docker-uri, --rootfs or --image-tar",
            where="build",
        )
    if bool(req.signing_certificate) != bool(req.private_key):
        raise UsageError("--signing-certificate and --private-key go together", where="build")
    args = ["build-enclave"]
    for flag, value in (
        ("--docker-uri", req.docker_uri),
        ("--docker-dir", req.docker_dir),
        ("--rootfs", req.rootfs),
        ("--cmd", req.cmd),
        ("--image-tar", req.image_tar),
        ("--build-time", req.build_time),
    ):
        if value:
            args += opt(flag, value)
    for item in req.env:
        args += opt("--env", item)
    args += opt("--output-file", req.output_file)
    for flag, value in (
        ("--signing-certificate", req.signing_certificate),
        ("--private-key", req.private_key),
        ("--name", req.name),
        ("--version", req.version),
        ("--metadata", req.metadata),
    ):
        if value:
            args += opt(flag, value)
    return args


def opt(flag: str, value: str) -> list[str]:
    """``[flag, value]``, or ``[flag=value]`` when the value starts with ``-``: a name or path such
    as ``-x`` would otherwise be read as another flag by nitro-cli (clap) and argparse alike."""
    return [f"{flag}={value}"] if value.startswith("-") else [flag, value]


def run_args(req: LaunchRequest) -> list[str]:
    args = ["run-enclave", *opt("--eif-path", req.eif_path), "--memory", str(req.memory_mib)]
    if req.cpu_ids:
        args += ["--cpu-ids", *(str(c) for c in req.cpu_ids)]
    elif req.cpu_count is not None:
        args += ["--cpu-count", str(req.cpu_count)]
    if req.cid is not None:
        args += ["--enclave-cid", str(req.cid)]
    if req.debug_mode:
        args.append("--debug-mode")
    if req.name:
        args += opt("--enclave-name", req.name)
    return args


# --- the driver ---------------------------------------------------------------------------------------


@functools.cache
def _load_prctl() -> Callable[..., int] | None:
    import ctypes  # a few ms: paid by the first command that starts a process, not by every import

    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies (PR_SET_PDEATHSIG).

    Children run in their own session (Ctrl-C must not reach them half-way), so without this a
    SIGTERM or SIGKILL to nitrodeck orphaned a running nitro-emu/nitro-cli. A parent that died
    before the call is caught by comparing the parent PID afterwards.
    """
    parent = os.getpid() if parent is None else parent
    prctl = _load_prctl()  # looked up here, in the parent: the child after fork must not load libraries

    def setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return setup


def _kill_group(proc: subprocess.Popen[bytes] | asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class NitroCli:
    """A nitro-cli compatible tool, run one command at a time. Thread-safe: no shared mutable state."""

    def __init__(
        self,
        backend: Backend | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        on_command: Callable[[CommandRecord], None] | None = None,
        build_timeout: float = BUILD_TIMEOUT,
        read_only: bool = False,
    ) -> None:
        self.backend = backend or select_backend()
        #: nothing may change: the backend is told so (NITRODECK_READ_ONLY=1), and nitro-emu then writes nothing
        self.read_only = read_only
        self.timeout = timeout
        self.build_timeout = build_timeout
        self.on_command = on_command
        #: set it (from any thread) to kill the command in progress: `up` does so on SIGTERM
        self.cancel: threading.Event | None = None
        #: emulator only: per running enclave, what ``nitro-emu emulator-describe`` said of it
        self._emulator_details: dict[str, EmulatorDetail] = {}

    # -- plumbing

    def _report(self, record: CommandRecord) -> None:
        if self.on_command is not None:
            self.on_command(record)

    def run(
        self, args: list[str], timeout: float | None = None, progress: Callable[[str], None] | None = None
    ) -> Completed:
        """Run one command; raise the parsed error unless it exits 0.

        ``progress`` receives each stderr line as it arrives (nitro-cli's progress goes to stderr).
        """
        argv = [*self.backend.argv, *args]
        text = command_text(self.backend, args)
        limit = self.timeout if timeout is None else timeout
        started = time.monotonic()
        if progress is None:
            answered = self._answer(args, argv, text, started, limit)
            if answered is not None:
                return answered
        import subprocess  # here: a status answered in-process never loads it

        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl and getppid run in the child
                env=backend_env(self.read_only),
            )
        except OSError as exc:
            self._report(CommandRecord(text, argv, None, time.monotonic() - started, False, BackendUnavailable.code))
            raise BackendUnavailable(
                f"cannot run {self.backend.display_name}: {exc.strerror or exc}",
                where=text,
                hint="install aws-nitro-enclaves-cli, or use --backend emulator",
            ) from None
        try:
            out, err = self._collect(proc, started + limit, progress, self.cancel)
        except DriverCancelled:
            _kill_group(proc)
            proc.wait()
            self._report(CommandRecord(text, argv, None, time.monotonic() - started, False, DriverCancelled.code))
            raise DriverCancelled("stopped on request; the process group was killed", where=text) from None
        except DriverTimeout:
            _kill_group(proc)
            proc.wait()
            self._report(CommandRecord(text, argv, None, time.monotonic() - started, False, DriverTimeout.code))
            raise DriverTimeout(f"no answer within {limit:g} s; the process group was killed", where=text) from None
        except InputTooLarge:
            _kill_group(proc)
            proc.wait()
            self._report(CommandRecord(text, argv, None, time.monotonic() - started, False, InputTooLarge.code))
            raise
        except BaseException:
            # Ctrl-C or a dying worker thread: the child has its own session, so it would not get the
            # signal; do not leave it running unobserved.
            _kill_group(proc)
            proc.wait()
            raise
        return self._finish(argv, text, started, proc.returncode, out.decode("utf-8", "replace"),
                            err.decode("utf-8", "replace"))

    def _finish(self, argv: list[str], text: str, started: float, code: int, stdout: str, stderr: str) -> Completed:
        if code != 0:
            error = error_from_output(argv, stderr, code, self.backend, stdout)
            self._report(CommandRecord(text, argv, code, time.monotonic() - started, False, error.code))
            raise error
        self._report(CommandRecord(text, argv, code, time.monotonic() - started, True))
        return Completed(argv, code, stdout, stderr)

    def _answer(self, args: list[str], argv: list[str], text: str, started: float, limit: float) -> Completed | None:
        """The command answered by the backend in this process (the emulator's describes), with the same
        checks, errors and command record as its process would have had; None: run the process."""
        cancel = self.cancel
        try:
            if cancel is not None and cancel.is_set():
                raise AnswerAbandoned(cancelled=True)
            answered = self.backend.answer(
                args, started + limit, cancel.is_set if cancel is not None else None, read_only=self.read_only
            )
        except AnswerAbandoned as exc:
            code = DriverCancelled.code if exc.cancelled else DriverTimeout.code
            self._report(CommandRecord(text, argv, None, time.monotonic() - started, False, code))
            if exc.cancelled:
                raise DriverCancelled("stopped on request", where=text) from None
            raise DriverTimeout(f"no answer within {limit:g} s", where=text) from None
        if answered is None:
            return None
        if max(len(answered.stdout.encode()), len(answered.stderr.encode())) > MAX_OUTPUT:
            self._report(CommandRecord(text, argv, None, time.monotonic() - started, False, InputTooLarge.code))
            raise InputTooLarge(f"output exceeds {MAX_OUTPUT} bytes", where="nitro-cli output")
        return self._finish(argv, text, started, answered.exit_code, answered.stdout, answered.stderr)

    @staticmethod
    def _collect(
        proc: subprocess.Popen[bytes],
        deadline: float,
        progress: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[bytes, bytes]:
        import selectors
        import subprocess

        assert proc.stdout is not None and proc.stderr is not None
        out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        bufs = {out_fd: bytearray(), err_fd: bytearray()}
        reported = 0  # stderr bytes already handed to ``progress``
        try:
            with selectors.DefaultSelector() as sel:
                for fd in bufs:
                    sel.register(fd, selectors.EVENT_READ)
                eof_deadline: float | None = None
                while sel.get_map():
                    now = time.monotonic()
                    if cancel is not None and cancel.is_set():
                        raise DriverCancelled("cancelled")
                    if now >= deadline:
                        raise DriverTimeout("timeout")
                    if eof_deadline is None and proc.poll() is not None:
                        eof_deadline = now + _EOF_GRACE
                    if eof_deadline is not None and now >= eof_deadline:
                        break  # a daemonized grandchild holds the pipe; what we have is complete
                    for key, _ in sel.select(min(deadline - now, 0.2)):
                        fd = int(key.fd)
                        chunk = os.read(fd, 65536)
                        if not chunk:
                            sel.unregister(fd)
                            continue
                        bufs[fd] += chunk
                        if len(bufs[fd]) > MAX_OUTPUT:
                            raise InputTooLarge(f"output exceeds {MAX_OUTPUT} bytes", where="nitro-cli output")
                        if progress is not None and fd == err_fd:
                            end = bufs[fd].rfind(b"\n") + 1
                            if end > reported:
                                for line in bytes(bufs[fd][reported:end]).decode(errors="replace").splitlines():
                                    if line.strip():
                                        progress(line.strip())
                                reported = end
            try:
                proc.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                raise DriverTimeout("timeout") from None
        finally:
            proc.stdout.close()
            proc.stderr.close()
        return bytes(bufs[out_fd]), bytes(bufs[err_fd])

    # -- commands

    def version(self) -> str:
        done = self.run(["--version"])
        text = done.stdout.strip() or done.stderr.strip()
        return text.splitlines()[0] if text else ""

    def build_enclave(self, req: BuildRequest, progress: Callable[[str], None] | None = None) -> BuildResult:
        done = self.run(
            build_args(req, self.backend), timeout=max(self.timeout, self.build_timeout), progress=progress
        )
        return parse_build(done.stdout, req.output_file)

    def run_enclave(self, req: LaunchRequest) -> RunInfo:
        # Real nitro-cli waits for the boot heartbeat (90 s per 6 GiB of EIF and more): allow for it.
        done = self.run(run_args(req), timeout=None if self.backend.is_emulator else max(self.timeout, RUN_TIMEOUT))
        return parse_run(done.stdout)

    def describe_enclaves(self, metadata: bool = False) -> list[EnclaveInfo]:
        return self.describe_enclaves_report(metadata)[0]

    def describe_enclaves_report(self, metadata: bool = False) -> tuple[list[EnclaveInfo], list[str]]:
        """The enclaves that answered, plus warnings.

        When one enclave process does not answer, nitro-cli still prints the JSON array of those that
        did, then ``Failed connections: N`` and E39, and exits 39 (enclave_proc_comm.rs
        ``enclave_process_handle_all_replies``). Those enclaves are real: keep them, and say what is
        missing, instead of discarding the whole answer.
        """
        try:
            done = self.run(["describe-enclaves", *(["--metadata"] if metadata else [])])
        except NitroCliError as err:
            if err.code != "E39" or not err.stdout.strip():
                raise
            try:
                enclaves = parse_enclaves(err.stdout)
            except NitrodeckError:
                raise err from None
            failed = _FAILED_CONNECTIONS.search(err.stderr)
            count = failed.group(1) if failed else "some"
            # the block's first sentence names the failure ("Enclave process connection failure"); the rest
            # is nitro-cli's generic explanation, and the error log says how many did not answer
            what = err.message.split(". ", 1)[0].strip()[:120]
            return enclaves, [
                f"{count} enclave process(es) did not answer describe-enclaves ({err.code}: {what}); "
                f"showing the {len(enclaves)} that did" + (f"; error log: {err.log_path}" if err.log_path else "")
            ]
        enclaves = parse_enclaves(done.stdout)
        if self.backend.is_emulator and enclaves:
            self._merge_emulator_details(enclaves)
        return enclaves, []

    def _merge_emulator_details(self, enclaves: list[EnclaveInfo]) -> None:
        """The EIF path and isolation are the emulator's own facts, on its own command. They do not
        change while an enclave runs, so the command runs only when an enclave is new to this driver;
        without them the enclaves are still described (as on Nitro, where there are none)."""
        known = self._emulator_details
        if any(e.enclave_id not in known for e in enclaves):
            with contextlib.suppress(NitrodeckError):
                for detail in parse_emulator_details(self.run(["emulator-describe"]).stdout):
                    known[detail.enclave_id] = detail
        live = {e.enclave_id for e in enclaves}
        for gone in [k for k in known if k not in live]:
            del known[gone]
        merge_emulator_details(enclaves, list(known.values()))

    def describe_eif(self, path: str | Path) -> EifInfo:
        done = self.run(["describe-eif", *opt("--eif-path", str(path))])
        return parse_eif(done.stdout)

    def terminate(self, enclave_id: str | None = None, name: str | None = None) -> TerminateInfo:
        if (enclave_id is None) == (name is None):
            raise UsageError("terminate needs exactly one of an enclave ID or a name", where="terminate")
        args = ["terminate-enclave", *(opt("--enclave-id", enclave_id) if enclave_id else opt("--enclave-name", str(name)))]
        done = self.run(args)
        return parse_terminate(done.stdout)

    def terminate_all(self) -> list[TerminateInfo]:
        done = self.run(["terminate-enclave", "--all"])
        return parse_terminate_all(done.stdout)

    def pcr(self, input: str | Path | None = None, cert: str | Path | None = None) -> str:
        if (input is None) == (cert is None):
            raise UsageError("pcr needs exactly one of an input file or a signing certificate", where="pcr")
        args = ["pcr", "--input", str(input)] if input is not None else ["pcr", "--signing-certificate", str(cert)]
        return parse_pcr(self.run(args).stdout)

    async def console(self, enclave_id: str, disconnect_timeout: float | None = None) -> AsyncGenerator[str, None]:
        """Stream the enclave console line by line (no trailing newline), preamble removed.

        Stops at EOF or after ``disconnect_timeout`` seconds. If the consumer stops iterating, the
        child is killed (with its process group) so no console reader is left behind.
        """
        args = ["console", "--enclave-id", enclave_id]
        if disconnect_timeout is not None:
            args += ["--disconnect-timeout", str(max(1, int(round(disconnect_timeout))))]
        import asyncio  # here: only the console stream needs it, and it costs headless commands ~30 ms

        argv = [*self.backend.argv, *args]
        text = command_text(self.backend, args)
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl and getppid run in the child
                env=backend_env(self.read_only),
            )
        except OSError as exc:
            raise BackendUnavailable(f"cannot run {self.backend.display_name}: {exc}", where=text) from None
        assert proc.stdout is not None and proc.stderr is not None
        err_task = asyncio.ensure_future(_read_capped(proc.stderr, MAX_OUTPUT))
        finished = False
        try:
            in_preamble = True
            pending = bytearray()
            while True:
                chunk = await proc.stdout.read(65536)
                if chunk:
                    pending += chunk
                lines: list[bytes] = []
                while True:
                    nl = pending.find(b"\n")
                    if nl < 0:
                        break
                    lines.append(bytes(pending[:nl]))
                    del pending[: nl + 1]
                if len(pending) > MAX_CONSOLE_LINE or (not chunk and pending):
                    lines.append(bytes(pending))
                    pending.clear()
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    if in_preamble and line.startswith(CONSOLE_PREAMBLE):
                        continue
                    in_preamble = False
                    yield line
                if not chunk:
                    break
            code = await proc.wait()
            stderr = (await err_task).decode("utf-8", "replace")
            finished = True
            if code != 0:
                error = error_from_output(argv, stderr, code, self.backend)
                self._report(CommandRecord(text, argv, code, time.monotonic() - started, False, error.code))
                raise error
            self._report(CommandRecord(text, argv, code, time.monotonic() - started, True))
        finally:
            if not finished:
                _kill_group(proc)
                # Drain to EOF so the pipe transports close while the loop is still running.
                try:
                    await asyncio.wait_for(asyncio.gather(proc.wait(), err_task, proc.stdout.read()), 5)
                except BaseException:  # noqa: BLE001 - best effort during cancellation/close
                    err_task.cancel()
                self._report(CommandRecord(text, argv, proc.returncode, time.monotonic() - started, True))


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Read to EOF, keeping at most ``limit`` bytes (the rest is drained so the child never blocks)."""
    kept = bytearray()
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return bytes(kept)
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
