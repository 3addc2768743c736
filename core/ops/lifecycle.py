"""The lifecycle API every front end calls: the TUI (from worker threads), the headless CLI, scripts.

``Lifecycle`` wraps the driver with what operators need around nitro-cli: lookups by ID or name,
validation before anything runs, a read-only mode, an audit trail, resources and expected PCRs.

Read-only and audit are enforced here, in the services layer, so no front end can bypass them.
Any module can mark its own actions with :func:`mutating` (KMS seal/provision, EIF signing): the
decorator refuses them under read-only before the body runs and appends one audit line per call.

Console logs: the emulator keeps every enclave's console in
``core.home.emulator_console_dir()/<enclave-id>.log`` (it outlives the enclave). Real nitro-cli keeps
no console history, so nitrodeck writes what it streams through :meth:`Lifecycle.console` to
``core.home.logs_dir()/console/<enclave-id>.log``; that copy holds only what nitrodeck has seen, and
only what a process that may write has seen (read-only keeps none).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import os
import shlex
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from core import home
from core.backends.base import Backend
from core.backends.driver import CommandRecord, NitroCli
from core.backends.real import ReadOnlyReason, device_path, read_only_reason, sysfs_root
from core.backends.registry import select_backend
from core.errors import NitrodeckError, ReadOnlyError, UsageError
from core.files import check_output_target
from core.models import (
    BuildRequest,
    BuildResult,
    EifInfo,
    EnclaveInfo,
    LaunchRequest,
    Measurements,
    RunInfo,
    TerminateInfo,
)
from core.ops.audit import AuditLog
from core.ops.expected import KEY_RULE, ExpectedPcrs, Judgement, Pin, Verdict, key_problem
from core.ops.journal import Event, Journal, console_tail, enclave_from_event, format_time, make_event
from core.ops.preflight import LaunchConflict, check_docker, check_launch, docker_silence
from core.ops.resources import Resources, gather

MIN_MEMORY_MIB = 64  # NE_MIN_ENCLAVE_MEM_SIZE
ASSET_TAG = "devices/virtual/dmi/id/board_asset_tag"  # under sysfs ($NITRODECK_SYSFS)
_MAX_SMALL_FILE = 16 * 1024
_MAX_KEPT_LOG = 64 * 1024 * 1024

#: nitro-cli subcommands that change nothing; they are left out of audit lines
READ_COMMANDS = frozenset({"describe-enclaves", "describe-eif", "pcr", "explain", "--version", "console",
                           "emulator-describe"})

F = TypeVar("F", bound=Callable[..., Any])

#: every action name marked with @mutating, in any module; front ends use it to hide/disable them
MUTATING_ACTIONS: set[str] = set()
#: the mutating actions that need the Nitro Enclaves device (a missing or unwritable device stops only these)
DEVICE_ACTIONS: set[str] = set()

# The commands run during the current mutating call, per thread/task, so its audit line carries them.
_capture: contextvars.ContextVar[list[list[str]] | None] = contextvars.ContextVar("nd_audit_capture", default=None)


class EnclaveNotFound(NitrodeckError):
    code = "ND-NO-ENCLAVE"
    exit_status = 11  # nitro-cli's E11 for an unknown enclave


class AmbiguousEnclave(NitrodeckError):
    code = "ND-AMBIGUOUS"
    exit_status = 58  # nitro-cli's E58 for conflicting names


def note_command(argv: list[str]) -> None:
    """Add a command line to the audit line of the mutating call in progress (no-op outside one)."""
    captured = _capture.get()
    if captured is not None:
        captured.append(list(argv))


def _refusal(owner: Any, kwargs: dict[str, Any], action: str) -> ReadOnlyReason | None:
    """Why ``action`` is refused now, or None. A device problem refuses only what needs the device."""
    reason = getattr(owner, "read_only_reason", None)
    if not isinstance(reason, ReadOnlyReason):
        asked = bool(kwargs.get("read_only")) or bool(getattr(owner, "read_only", False))
        reason = read_only_reason_flag() if asked else None
    if reason is None:
        return None
    return reason if reason.refuses_everything or action in DEVICE_ACTIONS else None


def read_only_reason_flag() -> ReadOnlyReason:
    return ReadOnlyReason("flag", "read-only: the --read-only flag was given", "restart without --read-only")


def _audit_for(owner: Any) -> AuditLog:
    audit = getattr(owner, "audit", None)
    return audit if isinstance(audit, AuditLog) else AuditLog()


def _backend_name(owner: Any) -> str:
    backend = getattr(owner, "backend", None)
    return backend.name if isinstance(backend, Backend) else str(backend or "")


def _flatten(captured: list[list[str]]) -> list[str]:
    if len(captured) == 1:
        return captured[0]
    # several commands in one action (e.g. terminate-all on two enclaves): keep them apart
    return [shlex.join(argv) for argv in captured]


def _record(owner: Any, action: str, captured: list[list[str]], error_code: str | None) -> None:
    _audit_for(owner).record(
        action, _flatten(captured), ok=error_code is None, code=error_code, backend=_backend_name(owner)
    )


def mutating(action: str, *, needs_device: bool = False) -> Callable[[F], F]:
    """Mark a function or method as changing the world.

    Read-only is taken from the first argument's ``read_only_reason`` (a Lifecycle) or ``read_only``
    attribute (a service object), or a ``read_only=`` keyword. ``needs_device``: the action talks to
    the Nitro Enclaves device, so a missing or unwritable device refuses it (and only such actions).
    Refusal happens before the body runs and is not audited (nothing happened); its message is the
    reason. Otherwise one audit line is appended, with the commands the call ran.
    """
    MUTATING_ACTIONS.add(action)
    if needs_device:
        DEVICE_ACTIONS.add(action)

    def decorate(fn: F) -> F:
        def before(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            owner = args[0] if args else None
            reason = _refusal(owner, kwargs, action)
            if reason is not None:
                raise ReadOnlyError(f"{action} is refused: {reason.detail}", where=action, hint=reason.hint)
            return owner

        @contextlib.contextmanager
        def audited(owner: Any) -> Iterator[None]:
            captured: list[list[str]] = []
            token = _capture.set(captured)
            try:
                yield
            except BaseException as exc:
                # Input refused before any command ran changed nothing: not worth an audit line.
                if captured or not isinstance(exc, UsageError | EnclaveNotFound | AmbiguousEnclave):
                    code = exc.code if isinstance(exc, NitrodeckError) else type(exc).__name__
                    _record(owner, action, captured, code)
                raise
            finally:
                _capture.reset(token)
            _record(owner, action, captured, None)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with audited(before(args, kwargs)):
                    return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with audited(before(args, kwargs)):
                return fn(*args, **kwargs)

        wrapper.mutating_action = action  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


@dataclass
class Status:
    backend: str
    backend_display: str
    instance_id: str | None
    enclaves: list[EnclaveInfo]
    resources: Resources
    read_only: bool
    taken_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    #: why nitrodeck is read-only (flag, environment, device missing or not writable), None if it is not
    read_only_reason: ReadOnlyReason | None = None
    #: what the enclave table may be missing (e.g. an enclave process that did not answer describe)
    warnings: list[str] = field(default_factory=list)


def _read_small(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(_MAX_SMALL_FILE).decode("utf-8", "replace")
    except OSError:
        return None


def emulator_instance_id() -> str | None:
    # here, not at the top: status of the real backend never parses YAML (and instance.yaml, flat,
    # is read without PyYAML)
    from core.yamlsafe import YamlRefused, load_yaml, yaml_error

    text = _read_small(home.emulator_instance_file())
    if text is None:
        return None
    try:
        data = load_yaml(text)
    except YamlRefused:
        return None
    except yaml_error():
        return None
    value = data.get("instance_id") if isinstance(data, dict) else None
    return str(value) if value else None


def real_instance_id(path: Path | None = None) -> str | None:
    text = _read_small(sysfs_root() / ASSET_TAG if path is None else path)
    tag = "".join((text or "").split())  # nitro-cli strips all whitespace too
    return tag or None


def kept_console_dir() -> Path:
    return home.logs_dir() / "console"


#: the tag `build --payload` gives the payload's Docker image on the real backend when none is given
PAYLOAD_DOCKER_URI = "nitrodeck-payload:latest"


class DockerMissing(NitrodeckError):
    code = "ND-DOCKER"


def docker_daemon_check(where: str) -> None:
    """Raise DockerMissing naming what is missing: the SDK, or a daemon answering at DOCKER_HOST."""
    try:
        import docker  # noqa: F401 - the payload is built with it
    except ImportError:  # pragma: no cover - docker is a dependency
        raise DockerMissing("the docker Python SDK is not installed", where=where, hint="pip install docker") from None
    target = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    why = docker_silence(timeout=10)
    if why is not None:
        raise DockerMissing(
            f"on the real backend the payload is built as a Docker image, and no Docker daemon answered at "
            f"{target}: {why}",
            where=where,
            hint="start Docker (`sudo systemctl start docker`) or set DOCKER_HOST, and make sure this user may use "
            "its socket; or build the EIF on a machine with Docker and copy it here",
        )


#: (output_file, build_time, docker_uri) -> the payload's BuildRequest (enclave_app.packaging.payload_request)
PayloadFactory = Callable[[str, str | None, str | None], BuildRequest]


class Lifecycle:
    """Thread-safe for concurrent calls: each call runs its own subprocess (or, the emulator's describes,
    its own in-process answer with its own output buffers) and holds no shared state."""

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        read_only: bool = False,
        read_only_reason: ReadOnlyReason | None = None,
        audit: AuditLog | None = None,
        driver: NitroCli | None = None,
        on_command: Callable[[CommandRecord], None] | None = None,
        payload: PayloadFactory | None = None,
        journal: Journal | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.backend = backend or (driver.backend if driver else select_backend())
        #: the enclave payload's build request, from whoever ships the payload (console passes enclave_app's)
        self.payload = payload
        if read_only_reason is None and read_only:
            read_only_reason = read_only_reason_flag()
        #: why changes are refused; a device reason refuses only DEVICE_ACTIONS (see mutating)
        self.read_only_reason = read_only_reason
        self.read_only = read_only_reason is not None
        #: the operator asked for read-only (flag or environment): reads write nothing either, here or in
        #: the backend (nitro-emu is told through its environment); a device reason still allows builds
        self.changes_nothing = read_only_reason is not None and read_only_reason.refuses_everything
        self.audit = audit or AuditLog()
        self._listener = on_command
        if driver is None:
            driver = NitroCli(self.backend)
        self._outer_listener = driver.on_command
        driver.on_command = self._on_command
        driver.read_only = driver.read_only or self.changes_nothing
        self.driver = driver
        self.expected = ExpectedPcrs(read_only=self.changes_nothing)
        #: what happened to enclaves, shared with every other nitrodeck process (core/ops/journal.py);
        #: read-only, what this process observes (exits, PCR mismatches) stays in its memory
        self.journal = journal or Journal(warn=on_warning)
        if self.changes_nothing:
            self.journal.read_only = True
        #: when this process last saw each enclave running (the best exit time on Nitro)
        self._last_seen: dict[str, float] = {}

    @staticmethod
    def auto_read_only(backend: Backend, device: Path | None = None) -> bool:
        """On Nitro, a user who cannot write the device cannot launch or terminate: say so up front."""
        device = device_path() if device is None else device
        return backend.name == "real" and not os.access(device, os.W_OK)

    @staticmethod
    def reason_for(backend: Backend, flag: bool = False) -> ReadOnlyReason | None:
        """The read-only reason a front end should start with (flag, environment, the device)."""
        return read_only_reason(backend, flag)

    def refuses(self, action: str) -> ReadOnlyReason | None:
        """Why ``action`` would be refused now (front ends hide what would be refused)."""
        return _refusal(self, {}, action)

    def _on_command(self, record: CommandRecord) -> None:
        argv = shlex.split(record.command)
        if len(argv) > 1 and argv[1] not in READ_COMMANDS:
            note_command(argv)  # lookups done on the way (describe) are not what the action changed
        for listener in (self._outer_listener, self._listener):
            if listener is not None:
                listener(record)

    # -- reads

    def instance_id(self) -> str | None:
        return emulator_instance_id() if self.backend.is_emulator else real_instance_id()

    def describe(self, metadata: bool = False) -> list[EnclaveInfo]:
        return self.describe_report(metadata)[0]

    # -- the journal: exits nobody asked for

    def observe(self, enclaves: list[EnclaveInfo]) -> list[Event]:
        """Record ``exited`` (once, whoever notices first) for launches the journal knows that are gone.

        Read-only, the journal keeps the event in this process's memory (it writes nothing)."""
        now = time.time()
        for enclave in enclaves:
            self._last_seen[enclave.enclave_id] = now
        try:
            open_launches = self.journal.open_launches()
        except Exception as exc:  # noqa: BLE001 - the journal never breaks a describe
            self.journal._warn(f"journal unreadable: {exc}")
            return []
        running = {e.enclave_id for e in enclaves}
        recorded = []
        for enclave_id, launch in open_launches.items():
            if enclave_id in running or self.journal.is_terminating(enclave_id):
                continue
            launched_by = launch.get("backend")
            if isinstance(launched_by, str) and launched_by != self.backend.name:
                # launched through another backend sharing this home (nitro-cli, then `--backend emulator`):
                # this backend's describe knows nothing of it, which says nothing about whether it runs
                continue
            event = self._exited_event(launch, now)
            if self.journal.record_once(event, functools.partial(self._still_open, enclave_id)):
                recorded.append(event)
        return recorded

    def _still_open(self, enclave_id: str, events: list[Event]) -> bool:
        return enclave_id in self.journal.open_launches(events)

    def _exited_event(self, launch: Event, now: float) -> Event:
        enclave_id = launch.enclave_id or ""
        started = launch.when.timestamp()
        info = self.backend.exit_info(enclave_id)
        ended_at = None
        if info is not None:
            started = info.started_at or started
            ended, source, ended_at = info.ended_at, "backend", format_time(datetime.fromtimestamp(info.ended_at, UTC))
        elif enclave_id in self._last_seen:
            ended, source = self._last_seen[enclave_id], "last-seen"  # it ran at least this long
        else:
            ended, source = now, "noticed"  # it ran at most this long
        last_console = None
        if launch.get("debug"):
            with contextlib.suppress(NitrodeckError):
                last_console = console_tail(self.console_log(enclave_id))
        carried = {k: launch.get(k) for k in ("image", "pcrs", "cid", "cpu_ids", "memory_mib", "debug")}
        return make_event(
            "exited",
            enclave_id=enclave_id,
            name=launch.name,
            eif_path=launch.eif_path,
            pcr0=launch.pcr0,
            uptime_s=round(max(0.0, ended - started), 3),
            uptime_source=source,
            exit_status=info.status if info is not None else None,
            ended_at=ended_at,
            launched_at=launch.time,
            last_console=last_console,
            **carried,
        )

    def events(self, since: datetime | None = None, enclave: str | None = None) -> list[Event]:
        """The journal, newest last; first records any exit nobody has noticed yet."""
        with contextlib.suppress(NitrodeckError):
            self.describe()
        return self.journal.read(since=since, enclave=enclave)

    def exited(self, since: datetime | None = None, limit: int = 16) -> list[tuple[EnclaveInfo, Event]]:
        """Recent ``exited`` events as enclaves (newest first), for showing what is gone."""
        out = []
        for event in reversed(self.journal.read(since=since)):
            if event.event != "exited":
                continue
            enclave = enclave_from_event(event)
            if enclave is not None:
                out.append((enclave, event))
            if len(out) >= limit:
                break
        return out

    def judge(self, enclave: EnclaveInfo, record: bool = True) -> Judgement:
        """The enclave's verdict against the pin of its EIF (the journal knows which EIF it was launched from)."""
        launch = self.journal.launch_of(enclave.enclave_id) if not (enclave.eif_path and enclave.image_name) else None
        eif_path = enclave.eif_path or (launch.eif_path if launch else None)
        image = enclave.image_name or (launch.get("image") if launch else None)
        judgement = self.expected.judge(enclave, eif_path, image if isinstance(image, str) else None)
        if record and judgement.verdict == "mismatch" and judgement.pin is not None and enclave.state != "EXITED":
            pin = judgement.pin
            event = make_event(
                "pcr-mismatch",
                enclave_id=enclave.enclave_id,
                name=enclave.name,
                eif_path=eif_path,
                pcr0=enclave.measurements.pcr0 if enclave.measurements else None,
                pin=pin.key,
                pinned_by=judgement.by,
                expected_pcr0=pin.pcrs.get(0),
            )
            def not_yet(events: list[Event]) -> bool:
                return not any(
                    e.event == "pcr-mismatch" and e.enclave_id == enclave.enclave_id and e.get("pin") == pin.key
                    for e in events
                )

            self.journal.record_once(event, not_yet)
        return judgement

    def describe_report(self, metadata: bool = False) -> tuple[list[EnclaveInfo], list[str]]:
        """The enclaves that answered, and a warning per problem (an enclave process that did not).

        Only a complete answer tells which enclaves are gone: with an enclave process that did not
        answer, nothing is taken for an exit (the journal waits for the next complete describe)."""
        enclaves, warnings = self.driver.describe_enclaves_report(metadata=metadata)
        if not warnings:
            self.observe(enclaves)
        return enclaves, warnings

    def describe_eif(self, path: str | Path) -> EifInfo:
        return self.driver.describe_eif(path)

    def resources(self, enclaves: list[EnclaveInfo] | None = None) -> Resources:
        return gather(self.describe() if enclaves is None else enclaves, self.backend, read_only=self.changes_nothing)

    def status(self) -> Status:
        # --metadata: the image name, version and build metadata reach the detail pane and `status`
        enclaves, warnings = self.describe_report(metadata=True)
        # before the instance ID: the emulator's model may create it (never when read-only: then a world
        # never set up has no instance ID yet, and says so)
        resources = self.resources(enclaves)
        return Status(
            backend=self.backend.name,
            backend_display=self.backend.display_name,
            instance_id=self.instance_id(),
            enclaves=enclaves,
            resources=resources,
            read_only=self.read_only,
            read_only_reason=self.read_only_reason,
            warnings=warnings,
        )

    def find(self, enclave: str) -> EnclaveInfo:
        """By exact ID, exact name, or a unique start (4+ characters) of the part after ``-enc``."""
        wanted = enclave.strip()
        if not wanted or len(wanted) > 256:
            raise UsageError("give an enclave ID or name", where="enclave")
        enclaves = self.describe()
        for candidates in (
            [e for e in enclaves if e.enclave_id == wanted],
            [e for e in enclaves if e.name == wanted],
            [e for e in enclaves if len(wanted) >= 4 and e.enclave_id.partition("-enc")[2].startswith(
                wanted.removeprefix("enc"))],
        ):
            if len(candidates) == 1:
                return candidates[0]
            if len(candidates) > 1:
                raise AmbiguousEnclave(
                    f"{wanted!r} matches {len(candidates)} enclaves: "
                    + ", ".join(e.enclave_id for e in candidates[:8]),
                    where="enclave",
                    hint="use the full enclave ID",
                )
        raise EnclaveNotFound(
            f"no running enclave has the ID or name {wanted[:80]!r}",
            where="enclave",
            hint="list them with `nitrodeck describe`",
        )

    # -- changes

    @mutating("build")
    def build(self, req: BuildRequest, progress: Callable[[str], None] | None = None) -> BuildResult:
        """Build an EIF; ``progress`` gets nitro-cli's stage lines as they are printed."""
        if req.payload and not (req.rootfs or req.image_tar or req.docker_dir):
            # The payload fixes the image (rootfs, cmd, env); what the operator adds on top
            # (signing, name, version, custom metadata, build time) is kept. With a docker URI
            # the same rootfs is built into that image by the local Docker daemon first.
            if self.payload is None:
                raise UsageError(
                    "this nitrodeck was started without the enclave payload's packaging",
                    where="build --payload",
                    hint="build from --rootfs or --docker-uri instead",
                )
            docker_uri = req.docker_uri
            if docker_uri is None and not self.backend.is_emulator:
                # nitro-cli builds only from a Docker image: the payload's context is built into one
                # by the local daemon (nitro-cli --docker-dir), so the daemon must answer first
                docker_daemon_check("build --payload")
                docker_uri = PAYLOAD_DOCKER_URI
            base = self.payload(req.output_file, req.build_time, docker_uri)
            if base.docker_uri and not self.backend.is_emulator:
                base = dataclasses.replace(base, build_time=None)  # --build-time is emulator-only
            req = dataclasses.replace(
                base,
                signing_certificate=req.signing_certificate,
                private_key=req.private_key,
                name=req.name or base.name,
                version=req.version or base.version,
                metadata=req.metadata,
            )
        # nitro-cli (like any builder) renames over the target: never over a device, FIFO or link
        check_output_target(req.output_file, where="--output-file")
        Path(req.output_file).expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
        if req.docker_uri:
            check_docker()  # nitro-cli would only say E48/E50 (the cause is in its error log)
        result = self.driver.build_enclave(req, progress=progress)
        self.journal.append(
            "built",
            eif_path=str(Path(result.output_file).expanduser().absolute()),
            pcr0=result.measurements.pcr0,
            image=req.name or (req.docker_uri.split(":")[0] if req.docker_uri else None),
            pcrs={str(k): v for k, v in result.measurements.pcrs().items()},
        )
        return result

    @mutating("launch", needs_device=True)
    def launch(self, req: LaunchRequest) -> RunInfo:
        validate_launch(req)
        eif_path = str(Path(req.eif_path).expanduser().absolute())
        failed = {"name": req.name, "eif_path": eif_path}
        try:
            eif = self._preflight(req)
        except NitrodeckError as exc:
            self.journal.append("launch-failed", **failed, code=exc.code, message=exc.message)
            raise
        failed["pcr0"] = eif.measurements.pcr0
        try:
            run = self.driver.run_enclave(req)
        except NitrodeckError as exc:
            self.journal.append(
                "launch-failed", **failed, code=exc.code, message=exc.message, detail=getattr(exc, "detail", None)
            )
            raise
        self.journal.append(
            "launched",
            enclave_id=run.enclave_id,
            name=run.name or req.name,
            eif_path=eif_path,
            pcr0=eif.measurements.pcr0,
            image=eif.image_name,
            pcrs={str(k): v for k, v in eif.measurements.pcrs().items()},
            cid=run.cid,
            cpu_ids=run.cpu_ids,
            memory_mib=run.memory_mib,
            debug=req.debug_mode or None,
            # which backend ran it: only that backend's describe can say it is gone
            backend=self.backend.name,
        )
        return run

    def _preflight(self, req: LaunchRequest) -> EifInfo:
        """What nitrodeck can know before nitro-cli runs (core/ops/preflight.py); the EIF's description."""
        try:
            eif = self.describe_eif(req.eif_path)
        except NitrodeckError as exc:
            # the error log's detail names the defect (bad magic, a short section); nitro-cli's E35
            # text alone talks about hugepages
            why = getattr(exc, "detail", None) or exc.message
            unopened = getattr(exc, "code", None) == "E19"  # nitro-cli could not open it (permissions)
            raise LaunchConflict(
                f"the EIF {req.eif_path} {'cannot be opened' if unopened else 'does not parse'}: {why}",
                cli_code="E19" if unopened else "E35",
                where="launch --eif-path",
                hint="check its permissions" if unopened else "check it with `nitrodeck describe-eif`, or rebuild it",
            ) from None
        enclaves = self.describe()
        check_launch(req, enclaves, self.resources(enclaves), Path(req.eif_path).expanduser().stat().st_size)
        return eif

    def _terminated(self, info: TerminateInfo) -> None:
        launch = self.journal.launch_of(info.enclave_id)
        uptime = round(time.time() - launch.when.timestamp(), 3) if launch else None
        self.journal.append(
            "terminated",
            enclave_id=info.enclave_id,
            name=info.name or (launch.name if launch else None),
            eif_path=launch.eif_path if launch else None,
            pcr0=launch.pcr0 if launch else None,
            uptime_s=uptime,
        )

    @mutating("terminate", needs_device=True)
    def terminate(self, enclave: str) -> TerminateInfo:
        target = self.find(enclave)
        with self.journal.terminating([target.enclave_id]):
            info = self.driver.terminate(enclave_id=target.enclave_id)
            self._terminated(info)
        return info

    @mutating("terminate-all", needs_device=True)
    def terminate_all(self) -> list[TerminateInfo]:
        ids: list[str] = []
        with contextlib.suppress(NitrodeckError):
            ids = [e.enclave_id for e in self.driver.describe_enclaves()]
        with self.journal.terminating(ids):
            done = self.driver.terminate_all()
            for info in done:
                self._terminated(info)
        return done

    @mutating("pin")
    def pin(self, key: str, measurements: Measurements, eif_path: str | None = None) -> Pin:
        note_command(["pin", key, measurements.pcr0])
        pin = self.expected.pin(key, measurements, eif_path)
        self.journal.append("pinned", eif_path=eif_path, pcr0=measurements.pcr0, pin=key)
        return pin

    def pin_eif(self, eif_path: str, key: str | None = None) -> Pin:
        """``nitrodeck pin EIF [--as KEY]``: the EIF's measurements under its image name (or KEY)."""
        if key is not None:
            check_pin_key(key, "pin --as")  # before anything runs: a bad key is the operator's typo
        info = self.describe_eif(eif_path)
        chosen = key if key is not None else info.image_name
        if not chosen:
            raise UsageError(
                f"{eif_path} carries no image name to pin it under",
                where="pin",
                hint="name the pin: `nitrodeck pin EIF --as KEY`",
            )
        if key is None:
            check_pin_key(chosen, "pin", hint="name the pin yourself: `nitrodeck pin EIF --as KEY`")
        return self.pin(chosen, info.measurements, str(Path(eif_path).expanduser().absolute()))  # type: ignore[no-any-return]

    @mutating("unpin")
    def unpin(self, key: str) -> None:
        check_pin_key(key, "unpin")
        if self.expected.get(key) is None:  # refused before anything changed: not audited
            raise UsageError(f"nothing is pinned as {key[:80]!r}", where="unpin", hint="list pins with `nitrodeck pins`")
        note_command(["unpin", key])
        self.expected.unpin(key)
        self.journal.append("unpinned", pin=key)

    def expected_for(self, enclave: EnclaveInfo) -> dict[int, str] | None:
        return self.judge(enclave, record=False).expected

    def match(self, enclave: EnclaveInfo) -> Verdict:
        return self.judge(enclave).verdict

    # -- console

    async def console(self, enclave: str, disconnect_timeout: float | None = None) -> AsyncGenerator[str, None]:
        import asyncio

        target = await asyncio.to_thread(self.find, enclave)
        keep = None
        written = 0
        # aclosing: when our consumer stops, the driver's stream must stop now (it kills the reader)
        async with contextlib.aclosing(self.driver.console(target.enclave_id, disconnect_timeout)) as lines:
            try:
                async for line in lines:
                    if keep is None and not self.backend.is_emulator and not self.changes_nothing:
                        # opened at the first line: an enclave without a console (E44) gets no empty log;
                        # read-only keeps no copy (it writes nothing)
                        path = home.ensure(kept_console_dir()) / f"{target.enclave_id}.log"
                        keep = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in finally below
                    if keep is not None and written < _MAX_KEPT_LOG:
                        keep.write(line + "\n")
                        written += len(line) + 1
                    yield line
            finally:
                if keep is not None:
                    keep.close()

    def console_log(self, enclave_id: str) -> Path | None:
        """The kept console file of an enclave (running or gone), or None."""
        if "/" in enclave_id or enclave_id.startswith(".") or len(enclave_id) > 256:
            raise UsageError(f"{enclave_id[:80]!r} is not an enclave ID", where="console --log")
        directory = home.emulator_console_dir() if self.backend.is_emulator else kept_console_dir()
        path = directory / f"{enclave_id}.log"
        return path if path.is_file() else None


def check_pin_key(key: str, where: str, hint: str | None = None) -> None:
    """A key no pin can have is the operator's input error (exit 2, nothing audited), said up front."""
    problem = key_problem(key)
    if problem is not None:
        raise UsageError(problem, where=where, hint=hint or f"use {KEY_RULE}")


def validate_launch(req: LaunchRequest) -> None:
    if req.memory_mib < MIN_MEMORY_MIB:
        raise UsageError(
            f"memory {req.memory_mib} MiB is below the enclave minimum of {MIN_MEMORY_MIB} MiB",
            where="launch --memory",
            hint="enclaves also need at least 4x the EIF size",
        )
    has_ids = bool(req.cpu_ids)
    has_count = req.cpu_count is not None
    if has_ids == has_count:
        raise UsageError("give exactly one of --cpu-count or --cpu-ids", where="launch")
    if has_count and (req.cpu_count or 0) < 1:
        raise UsageError("--cpu-count must be at least 1", where="launch --cpu-count")
    if req.cid is not None and req.cid != 0 and not (4 <= req.cid < 0xFFFFFFFF):
        raise UsageError(f"CID {req.cid} is reserved; enclave CIDs start at 4", where="launch --cid")
    eif = Path(req.eif_path).expanduser()
    if not eif.is_file():
        raise UsageError(f"no EIF file at {req.eif_path}", where="launch --eif-path",
                         hint="build one with `nitrodeck build`")
