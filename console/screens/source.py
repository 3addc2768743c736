"""Where the TUI gets its data: the live lifecycle, or a frozen world for snapshots and screenshots.

The App only talks to a :class:`Source`. :class:`LiveSource` wraps ``core.ops.lifecycle.Lifecycle``;
``console.screens.frozen.FrozenSource`` returns the same dataclasses with fixed values and a frozen
clock, so snapshot SVGs are identical on every machine. Every method here may block: the App calls
them from thread workers only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from core import home
from core.errors import NitrodeckError, UsageError
from core.models import BuildRequest, BuildResult, EifInfo, EnclaveInfo, LaunchRequest, Measurements, RunInfo

#: PCR match verdicts, as core's Lifecycle.match returns them
MATCH, MISMATCH, UNPINNED, DEBUG = "match", "mismatch", "unpinned", "debug"
#: how far back the dashboard shows exits from the journal, and how many
EXITED_WINDOW = timedelta(hours=24)
MAX_EXITED = 16
EVENTS_PER_ENCLAVE = 12
_BY = {"eif": "EIF file", "image": "image name", "name": "enclave name"}


def pin_label(judgement: Any) -> str | None:
    """``payments (image name)``: which pin a verdict compared with, and how it was found."""
    if judgement is None or judgement.pin is None:
        return None
    return f"{judgement.pin.key} ({_BY.get(judgement.by, judgement.by)})"


class DockerUnavailable(NitrodeckError):
    code = "ND-DOCKER"


@dataclass
class ExitedRow:
    """An enclave the journal saw exit: rebuilt from its events, judged against the pin of its EIF."""

    enclave: EnclaveInfo
    event: Any  # core.ops.journal.Event ("exited": time, uptime_s, exit_status, last_console)
    verdict: str = UNPINNED
    pin: str | None = None
    expected: dict[int, str] | None = None


@dataclass
class Snapshot:
    """One refresh: the lifecycle's Status plus what the dashboard derives from it."""

    status: Any  # core.ops.lifecycle.Status (backend, instance_id, enclaves, resources, read_only, taken_at)
    matches: dict[str, str] = field(default_factory=dict)
    expected: dict[str, dict[int, str] | None] = field(default_factory=dict)
    #: describe-eif of the EIF each enclave was launched from, when known (enclave ID -> EifInfo)
    eifs: dict[str, EifInfo] = field(default_factory=dict)
    #: when each enclave's process started (the age column), when known
    started: dict[str, datetime] = field(default_factory=dict)
    #: recent exits from the lifecycle journal, newest first
    exited: list[ExitedRow] = field(default_factory=list)
    #: which pin each verdict compared with, as shown ("payments (EIF file)"); enclave ID -> label
    pins: dict[str, str | None] = field(default_factory=dict)
    #: the journal's events per enclave ID (oldest first, the last few)
    events: dict[str, list[Any]] = field(default_factory=dict)
    #: what went wrong with the journal (a full disk, a torn line)
    journal_warnings: list[str] = field(default_factory=list)

    @property
    def enclaves(self) -> list[EnclaveInfo]:
        return list(self.status.enclaves)


class ChangeWatcher(Protocol):
    """Tells the dashboard when to refresh: core.ops.watch.DirWatcher on this host, an agent's event
    stream for a remote one."""

    def wait(self, timeout: float | None) -> bool:
        """True when something changed; False on timeout or after close."""
        ...

    def close(self) -> None:
        """Wake a waiter and stop; from any thread."""
        ...


class Source(ABC):
    """What the dashboard needs. Subclasses: LiveSource, FrozenSource."""

    backend: Any  # core.backends.base.Backend
    read_only: bool = False
    #: core.backends.real.ReadOnlyReason: why changes are refused (a device reason refuses launch/terminate only)
    read_only_reason: Any = None
    schemes: tuple[str, ...] = ()
    #: why the console of a running enclave cannot be streamed from here (None: it can)
    console_unavailable: str | None = None
    #: why describe-eif details of an enclave's EIF cannot be shown from here (None: they can)
    eif_unavailable: str | None = None
    #: why the command log stays empty (a remote host's nitro-cli commands run there, not here)
    commands_unavailable: str | None = None

    def now(self) -> datetime:
        return datetime.now(UTC)

    def unavailable_actions(self) -> dict[str, str]:
        """Dashboard actions (registry action names) this source cannot serve at all, each with why:
        their keys are hidden like read-only ones, and pressing one says why."""
        return {}

    def host_stats(self) -> Any:
        """One sample of the host's CPU and memory (core.ops.resources.HostStats) for the sparklines;
        None when there is none to take."""
        from core.ops.resources import host_stats

        return host_stats()

    @abstractmethod
    def snapshot(self) -> Snapshot:
        ...

    def ready_snapshot(self) -> Snapshot | None:
        """The first snapshot, if it is already at hand (taken before the TUI started), without waiting
        for one: the dashboard's first frame then has the enclaves in it."""
        return None

    def eif_details(self, snap: Snapshot) -> Snapshot | None:
        """``snap`` with describe-eif details its enclaves' EIFs still lack, or None when it has them
        all (describing an EIF reads it whole: the table paints first, details follow)."""
        return None

    def doctor(self) -> Any:
        """The doctor's checks for this backend (core.ops.doctor.DoctorReport); probes are bounded."""
        from console.doctor_inputs import doctor_inputs
        from core.ops.doctor import run_doctor

        return run_doctor(doctor_inputs(self.backend, read_only=self.read_only))

    def host_history(self) -> tuple[list[float], list[float]]:
        """Samples to seed the host sparklines with (CPU %, memory %)."""
        return [], []

    def watch_dirs(self) -> list[Path]:
        """Folders to watch for enclave changes (core.ops.watch); none for a world that never changes."""
        return []

    def change_watcher(self) -> ChangeWatcher | None:
        """What tells the dashboard to refresh before its safety poll: inotify on :meth:`watch_dirs`."""
        from core.ops.watch import DirWatcher

        dirs = self.watch_dirs()
        return DirWatcher(dirs) if dirs else None

    def audit_path(self) -> Path:
        return home.audit_log()

    def audit_entries(self) -> list[dict[str, Any]]:
        """The audit log's entries, oldest first (bounded by AuditLog.entries)."""
        from core.ops.audit import AuditLog

        try:
            return AuditLog(self.audit_path()).entries()
        except NitrodeckError as err:
            return [{"time": "", "action": "(unreadable)", "result": "error", "code": err.code, "argv": [err.message]}]

    def still_running(self) -> list[EnclaveInfo]:
        """On quit: emulated enclaves that keep running after the TUI (real ones are expected to)."""
        return []

    def eif_dir(self) -> Path:
        """Where built EIFs go and launch looks for them."""
        return home.eif_library()

    def initial_commands(self) -> list[Any]:
        """Command-log entries to show before anything runs (the frozen world has a history)."""
        return []

    def eif_library(self) -> list[Path]:
        folder = self.eif_dir()
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix == ".eif" and p.is_file())

    def eif_size(self, path: Path) -> int:
        return path.stat().st_size

    def output_exists(self, path: Path) -> bool:
        """Would a build replace a file (the build dialog asks first)?"""
        return path.exists()

    @abstractmethod
    def describe_eif(self, path: Path) -> EifInfo:
        ...

    def docker_images(self) -> list[str]:
        """Tags of the local Docker daemon's images; DockerUnavailable when there is no daemon."""
        try:
            import docker
        except ImportError as exc:  # pragma: no cover - docker is a dependency
            raise DockerUnavailable("the docker SDK is not installed", hint="pip install docker") from exc
        try:
            client = docker.from_env(timeout=5)
            images = client.images.list()
        except Exception as exc:  # noqa: BLE001 - any failure means: no usable daemon
            emulator = bool(getattr(self.backend, "is_emulator", False))
            raise DockerUnavailable(
                f"no Docker daemon: {str(exc)[:200]}",
                # nitro-cli builds only from Docker images: without a daemon nothing builds on Nitro
                hint="start Docker (or set DOCKER_HOST), or build from a URI, a rootfs folder or the payload"
                if emulator
                else "start Docker (or set DOCKER_HOST): nitro-cli builds every EIF from a Docker image, "
                "so nothing can be built here until a daemon answers",
            ) from None
        return sorted({tag for image in images for tag in image.tags})

    @abstractmethod
    def build(self, req: BuildRequest, stage: Callable[[str], None]) -> BuildResult:
        ...

    @abstractmethod
    def pin(self, image_name: str | None, measurements: Measurements, eif_path: str | None = None) -> str:
        """Pin under ``image_name``, or (None) under the image name of the EIF at ``eif_path``; the key."""

    @abstractmethod
    def launch(self, req: LaunchRequest) -> RunInfo:
        ...

    @abstractmethod
    def terminate(self, enclave_id: str) -> Any:
        ...

    @abstractmethod
    def terminate_all(self) -> Any:
        ...

    @abstractmethod
    def test_sign(self, enclave: EnclaveInfo, payload: bytes, scheme: str) -> Any:
        ...

    @abstractmethod
    def console(self, enclave_id: str) -> AsyncIterator[str]:
        ...

    def console_log(self, enclave_id: str) -> Path | None:
        return None

    def free_memory_mib(self, snapshot: Snapshot | None) -> int | None:
        """Free hugepage memory in MiB across pools, None when unknown."""
        if snapshot is None or snapshot.status.resources is None:
            return None
        pools = snapshot.status.resources.hugepages
        if not pools:
            return None
        return sum(p.free * p.size_kb for p in pools) // 1024

    def free_cpus(self, snapshot: Snapshot | None) -> list[int] | None:
        if snapshot is None or snapshot.status.resources is None or snapshot.status.resources.cpus is None:
            return None
        return list(snapshot.status.resources.cpus.free)


class LiveSource(Source):
    """The real thing: core.ops.lifecycle.Lifecycle against the selected backend."""

    def __init__(self, backend_flag: str | None, read_only: bool, on_command: Callable[[Any], None]) -> None:
        from core.backends.registry import select_backend
        from core.ops.lifecycle import Lifecycle

        self.backend = select_backend(backend_flag)
        # the flag, $NITRODECK_READ_ONLY, or (on Nitro) a missing or unwritable device, each with its reason
        self.read_only_reason = Lifecycle.reason_for(self.backend, read_only)
        self.read_only = self.read_only_reason is not None and self.read_only_reason.refuses_everything
        from console.wiring import payload_factory

        self.lifecycle = Lifecycle(
            self.backend, read_only_reason=self.read_only_reason, on_command=on_command, payload=payload_factory
        )
        #: describe-eif results by (path, mtime): an EIF is described once, not every refresh
        self._eif_cache: dict[tuple[str, float], EifInfo] = {}
        self._prefetched: tuple[Any, list[Any]] | None = None

    @property  # type: ignore[override]
    def schemes(self) -> tuple[str, ...]:
        # imported when the test-sign dialog opens: core.ops.testsign brings the attestation verifier and
        # cryptography (~90 ms), which the dashboard's first paint does not need
        from core.ops.testsign import SCHEMES

        return tuple(SCHEMES)

    def watch_dirs(self) -> list[Path]:
        return self.backend.watch_dirs()

    def prefetch(self) -> None:
        """Start the first describe now, in a thread, so that it overlaps the TUI's own start-up
        (importing Textual and mounting take about as long as describe-enclaves)."""
        import threading

        holder: list[Snapshot | BaseException] = []

        def run() -> None:
            try:
                holder.append(self._snapshot())
            except BaseException as exc:  # noqa: BLE001 - handed to the first snapshot() call
                holder.append(exc)

        thread = threading.Thread(target=run, name="first-describe", daemon=True)
        thread.start()
        self._prefetched = (thread, holder)

    def snapshot(self) -> Snapshot:
        pending, self._prefetched = self._prefetched, None
        if pending is not None:
            thread, holder = pending
            thread.join()
            if holder and isinstance(holder[0], Snapshot):
                return holder[0]
            if holder and isinstance(holder[0], NitrodeckError):
                raise holder[0]
        return self._snapshot()

    def peek_snapshot(self, timeout: float) -> Snapshot | None:
        """The prefetched first snapshot once it is back (waiting at most ``timeout``), left in place
        for the dashboard; None if it is not back yet or failed (the dashboard shows why)."""
        pending = self._prefetched
        if pending is None:
            return None
        thread, holder = pending
        thread.join(timeout)
        if thread.is_alive() or not holder or not isinstance(holder[0], Snapshot):
            return None
        return holder[0]

    def ready_snapshot(self) -> Snapshot | None:
        pending = self._prefetched
        if pending is None or pending[0].is_alive():
            return None
        thread, holder = pending
        if holder and isinstance(holder[0], Snapshot):
            self._prefetched = None
            return holder[0]
        return None  # it failed: snapshot() raises that in the refresh worker, where failures show

    def eif_details(self, snap: Snapshot) -> Snapshot | None:
        eifs = self._eifs_of(snap.enclaves, describe=True)
        if eifs == snap.eifs:
            return None
        return dataclasses.replace(snap, eifs=eifs)

    def _snapshot(self) -> Snapshot:
        status = self.lifecycle.status()  # also records exits nobody has noticed yet (the journal)
        matches: dict[str, str] = {}
        expected: dict[str, dict[int, str] | None] = {}
        pins: dict[str, str | None] = {}
        for enclave in status.enclaves:
            try:
                judgement = self.lifecycle.judge(enclave)
                matches[enclave.enclave_id] = judgement.verdict
                expected[enclave.enclave_id] = judgement.expected
                pins[enclave.enclave_id] = pin_label(judgement)
            except NitrodeckError:
                matches[enclave.enclave_id] = UNPINNED
                expected[enclave.enclave_id] = None
        exited = []
        for enclave, event in self.lifecycle.exited(since=self.now() - EXITED_WINDOW, limit=MAX_EXITED):
            try:
                judgement = self.lifecycle.judge(enclave, record=False)
                exited.append(ExitedRow(enclave, event, judgement.verdict, pin_label(judgement), judgement.expected))
            except NitrodeckError:
                exited.append(ExitedRow(enclave, event))
        # a broken pin file judged nothing: the header says which
        status.warnings = [*status.warnings, *self.lifecycle.expected.problem_lines()]
        events: dict[str, list[Any]] = {}
        for event in self.lifecycle.journal.read(since=self.now() - EXITED_WINDOW):
            if event.enclave_id:  # also enclaves this TUI saw go (a terminate shows as TERMINATED)
                events.setdefault(event.enclave_id, []).append(event)
        events = {k: v[-EVENTS_PER_ENCLAVE:] for k, v in events.items()}
        return Snapshot(
            status, matches, expected, self._eifs_of(status.enclaves, describe=False), started_at(status.enclaves),
            exited=exited, pins=pins, events=events, journal_warnings=list(self.lifecycle.journal.warnings),
        )

    def still_running(self) -> list[EnclaveInfo]:
        if not self.backend.is_emulator:
            return []
        try:
            return self.lifecycle.describe()
        except NitrodeckError:
            return []

    def _eifs_of(self, enclaves: list[EnclaveInfo], describe: bool) -> dict[str, EifInfo]:
        out: dict[str, EifInfo] = {}
        for enclave in enclaves:
            if not enclave.eif_path:
                continue
            try:
                key = (enclave.eif_path, Path(enclave.eif_path).stat().st_mtime)
            except OSError:
                continue  # the EIF was moved or deleted since launch; nothing to describe
            if key not in self._eif_cache:
                if not describe:
                    continue
                try:
                    self._eif_cache[key] = self.lifecycle.describe_eif(enclave.eif_path)
                except NitrodeckError:
                    continue
            out[enclave.enclave_id] = self._eif_cache[key]
        return out

    def describe_eif(self, path: Path) -> EifInfo:
        return self.lifecycle.describe_eif(path)  # type: ignore[no-any-return]

    def build(self, req: BuildRequest, stage: Callable[[str], None]) -> BuildResult:
        source = "payload" if req.payload else "Docker image" if req.docker_uri else "rootfs" if req.rootfs else "image"
        stage(f"building the EIF from the {source}")
        result = self.lifecycle.build(req, progress=stage)
        stage("measured PCR0/1/2" + ("/8 (signed)" if req.signing_certificate else ""))
        return result

    def pin(self, image_name: str | None, measurements: Measurements, eif_path: str | None = None) -> str:
        if image_name is None and eif_path:
            # the key the enclave will be judged by: the ImageName nitro-cli wrote into the EIF
            return self.lifecycle.pin_eif(eif_path).key  # type: ignore[no-any-return]
        if image_name is None:
            raise UsageError("nothing names this pin", where="pin", hint="give the image a name")
        return self.lifecycle.pin(image_name, measurements, eif_path).key  # type: ignore[no-any-return]

    def launch(self, req: LaunchRequest) -> RunInfo:
        return self.lifecycle.launch(req)  # type: ignore[no-any-return]

    def terminate(self, enclave_id: str) -> Any:
        return self.lifecycle.terminate(enclave_id)

    def terminate_all(self) -> Any:
        return self.lifecycle.terminate_all()

    def test_sign(self, enclave: EnclaveInfo, payload: bytes, scheme: str) -> Any:
        # Read-only allows it: test-sign asks the enclave for a signature and changes nothing.
        from core.ops.testsign import test_sign

        return test_sign(self.lifecycle, enclave.enclave_id, payload, scheme, self.lifecycle.expected_for(enclave))

    def console(self, enclave_id: str) -> AsyncIterator[str]:
        return self.lifecycle.console(enclave_id)

    def console_log(self, enclave_id: str) -> Path | None:
        return self.lifecycle.console_log(enclave_id)  # type: ignore[no-any-return]


def started_at(enclaves: list[EnclaveInfo]) -> dict[str, datetime]:
    """When each enclave's process started. describe-enclaves has no start time, but ProcessID is the
    enclave process on this parent (nitro-cli's daemon, or the emulator's supervisor)."""
    import psutil

    out: dict[str, datetime] = {}
    for enclave in enclaves:
        try:
            out[enclave.enclave_id] = datetime.fromtimestamp(psutil.Process(enclave.process_id).create_time(), UTC)
        except (psutil.Error, OSError, ValueError):
            continue
    return out


def default_output_path(name: str, folder: Path) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-.") or "image"
    return str(folder / f"{safe}.eif")


def parse_cpu_ids(text: str) -> list[int]:
    """'1,3' or '2-5' or '1 3' -> sorted unique CPU IDs; UsageError on anything else."""
    out: set[int] = set()
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                if int(hi) < int(lo) or int(hi) - int(lo) > 4096:
                    raise ValueError
                out.update(range(int(lo), int(hi) + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise UsageError(f"not a CPU list: {text[:40]!r}", hint="use IDs like 1,3 or a range like 2-5") from None
    return sorted(out)


def run_async_iter(agen: AsyncIterator[str], sink: Callable[[str], None], cancelled: Callable[[], bool]) -> None:
    """Drain an async line iterator in this (worker) thread's own loop, stopping when cancelled."""
    import asyncio  # here: the first frame (console/first_frame.py) comes before asyncio is needed

    async def pump() -> None:
        async for line in agen:
            sink(line)

    async def drain() -> None:
        # The iterator may sit silent for minutes; poll the cancel flag beside it.
        task = asyncio.ensure_future(pump())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.2)
                if cancelled():
                    task.cancel()
                    break
            if task.done() and not task.cancelled():
                task.result()
        finally:
            if not task.done():
                with contextlib.suppress(BaseException):
                    await task
            closer = getattr(agen, "aclose", None)
            if closer is not None:
                with contextlib.suppress(BaseException):
                    await closer()

    asyncio.run(drain())


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


class Relay:
    """A callback whose target is set later: the driver's command records, before the app exists."""

    def __init__(self) -> None:
        self.target: Callable[[Any], None] | None = None

    def __call__(self, record: Any) -> None:
        if self.target is not None:
            self.target(record)


class EarlySource:
    """The live source, made before the TUI: its first describe-enclaves starts at once, in a thread,
    and overlaps importing Textual and mounting the app (console/cli.py makes it first)."""

    def __init__(self, backend: str | None, read_only: bool) -> None:
        self.relay = Relay()
        self.source = LiveSource(backend, read_only, self.relay)
        self.source.prefetch()
