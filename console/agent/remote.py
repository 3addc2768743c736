"""One remote host's dashboard, read through its agent: a :class:`~console.screens.source.Source` over
`nitrodeck serve`'s GET endpoints (the fleet's drill-down, `nitrodeck fleet --open NAME`).

The dashboard (console/app.py) gets the same :class:`~console.screens.source.Snapshot` it gets on the host
itself, built from ``/status`` (enclaves with their verdicts, the pins they compared with and when they
started; pools; recent exits) and ``/events`` (the journal, for the detail pane). ``/events/stream`` tells
it when to refresh, as inotify does locally, and a short poll covers the rest.

Read-only by construction, whatever the flags: the agent serves GET only, this source's ``read_only_reason``
refuses everything ("remote host via its agent: read-only"), and every mutating method raises
:class:`~core.errors.ReadOnlyError` before any request is made. What the agent does not serve (a running
enclave's console, describe-eif of its EIF, test-sign, the doctor, the audit log) is said to be
unavailable, never shown as an error.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from console.agent.fleet import DEFAULT_TIMEOUT_S, AgentClient, HostEntry
from console.screens.source import (
    EVENTS_PER_ENCLAVE,
    EXITED_WINDOW,
    UNPINNED,
    ChangeWatcher,
    ExitedRow,
    Snapshot,
    Source,
)
from core.errors import NitrodeckError, ReadOnlyError
from core.models import BuildRequest, BuildResult, EifInfo, EnclaveInfo, LaunchRequest, Measurements, RunInfo
from core.ops.journal import Event, enclave_from_event, parse_time
from core.ops.lifecycle import Status
from core.ops.resources import CpuPool, HostStats, HugepagePool, Resources
from core.text import safe_text

READ_ONLY_DETAIL = "remote host via its agent: read-only"
NOT_THROUGH_AGENT = "not available through the agent"
#: how often a host's dashboard asks its agent again when its event stream says nothing (the agent
#: answers from its cached snapshot, so this costs it a lock and a format)
REMOTE_REFRESH_S = 5.0
#: the agent writes a keep-alive every 15 s on an idle stream: this long without a byte means it is gone
STREAM_TIMEOUT_S = 40.0
#: after an event, one more look this much later: the journal's event (written by whoever launched or
#: noticed an exit) can arrive before the agent's own snapshot has caught up with the kernel
SECOND_LOOK_S = 1.5
MAX_STREAM_LINE = 64 * 1024
_BY = {"eif": "EIF file", "image": "image name", "name": "enclave name"}


class AgentUnavailable(NitrodeckError):
    """The host's agent did not answer, refused the token, or answered something else than its JSON."""

    code = "ND-AGENT"


@dataclass(frozen=True)
class RemoteReadOnly:
    """Why a remote host's dashboard refuses every change (the shape of core.backends.real.ReadOnlyReason)."""

    host: str
    kind: str = "remote"
    detail: str = READ_ONLY_DETAIL
    hint: str = "change enclaves on the host itself (ssh in and run nitrodeck there): its agent serves GET only"

    @property
    def refuses_everything(self) -> bool:
        return True

    @property
    def label(self) -> str:
        return f"{self.host} via its agent"


@dataclass(frozen=True)
class RemoteBackend:
    """The remote host's backend as its agent reports it (the header's badge)."""

    name: str = "remote"
    display_name: str = "agent"
    is_emulator: bool = False


class Transport(Protocol):
    """GET a path of the agent: (HTTP status, parsed JSON). AgentClient over the network."""

    def get(self, path: str) -> tuple[int, Any]: ...


# -- the agent's JSON -> the dashboard's Snapshot (no I/O)


def _pcrs(value: Any) -> dict[int, str] | None:
    """``{"PCR0": hex, ...}`` -> ``{0: hex, ...}``; None when absent or malformed."""
    if not isinstance(value, dict):
        return None
    out: dict[int, str] = {}
    for key, hexdigits in value.items():
        if isinstance(key, str) and key.startswith("PCR") and key[3:].isdecimal() and isinstance(hexdigits, str):
            out[int(key[3:])] = hexdigits.lower()
    return out or None


def _pin_label(obj: dict[str, Any]) -> str | None:
    key = obj.get("ExpectedPCRsPin")
    if not isinstance(key, str) or not key:
        return None
    by = obj.get("ExpectedPCRsPinnedBy")
    return f"{key} ({_BY.get(by, by)})" if isinstance(by, str) else key


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _ints(value: Any) -> list[int]:
    return [v for v in value if isinstance(v, int) and not isinstance(v, bool)] if isinstance(value, list) else []


def _resources(doc: dict[str, Any]) -> Resources:
    pool = _dict(doc.get("cpu_pool"))
    held = _dict(pool.get("held"))
    cpus = CpuPool(_ints(pool.get("pool")), {str(k): _ints(v) for k, v in held.items()}, _ints(pool.get("free")),
                   str(pool.get("source") or "agent"))
    pages = []
    for p in _list(doc.get("hugepages")):
        if isinstance(p, dict) and _int(p.get("size_kb")) > 0:
            node = p.get("node")
            pages.append(HugepagePool(_int(p.get("size_kb")), node if isinstance(node, int) else None,
                                      _int(p.get("total")), _int(p.get("free")), _int(p.get("held_by_enclaves")),
                                      str(p.get("source") or "agent")))
    host = _dict(doc.get("host"))
    cpu = host.get("cpu_percent")
    stats = HostStats(float(cpu) if isinstance(cpu, int | float) else 0.0, _int(host.get("mem_total")),
                      _int(host.get("mem_used")))
    problem = doc.get("allocator_error")
    driver = doc.get("driver_loaded")
    return Resources(pages, cpus, stats, problem=problem if isinstance(problem, str) else None,
                     driver_loaded=driver if isinstance(driver, bool) else None)


def _started(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def snapshot_from_agent(status: Any, events: Any, now: datetime) -> Snapshot:
    """The dashboard's Snapshot from an agent's ``/status`` object and ``/events`` answer. Anything an older
    or odd agent leaves out degrades to "unknown"; an enclave that cannot be read becomes a warning."""
    if not isinstance(status, dict):
        raise AgentUnavailable("/status did not answer a JSON object", hint="is this URL a nitrodeck agent?")
    warnings = [safe_text(w)[:300] for w in status.get("warnings") or [] if isinstance(w, str)][:20]
    enclaves: list[EnclaveInfo] = []
    matches: dict[str, str] = {}
    expected: dict[str, dict[int, str] | None] = {}
    pins: dict[str, str | None] = {}
    started: dict[str, datetime] = {}
    for index, obj in enumerate(_list(status.get("enclaves"))):
        try:
            enclave = EnclaveInfo.from_json(obj, f"/status enclaves[{index}]")
        except NitrodeckError as err:
            warnings.append(f"the agent listed an enclave nitrodeck cannot read: {err}"[:300])
            continue
        enclaves.append(enclave)
        verdict = obj.get("ExpectedPCRs")
        matches[enclave.enclave_id] = verdict if isinstance(verdict, str) and verdict else UNPINNED
        expected[enclave.enclave_id] = _pcrs(obj.get("ExpectedMeasurements"))
        pins[enclave.enclave_id] = _pin_label(obj)
        if (when := _started(obj.get("StartedAt"))) is not None:
            started[enclave.enclave_id] = when
    instance = status.get("instance_id")
    taken = status.get("taken_at")
    st = Status(
        backend=str(status.get("backend") or "remote"),
        backend_display=str(status.get("backend_display") or status.get("backend") or "agent"),
        instance_id=instance if isinstance(instance, str) else None,
        enclaves=enclaves,
        resources=_resources(status),
        read_only=True,
        taken_at=taken if isinstance(taken, str) else now.isoformat(timespec="seconds"),
        warnings=warnings,
    )
    exited: list[ExitedRow] = []
    for obj in _list(status.get("exited")):
        event = Event.from_json(obj)
        gone = enclave_from_event(event) if event is not None else None
        if event is None or gone is None:
            continue
        verdict = obj.get("ExpectedPCRs")
        exited.append(ExitedRow(gone, event, verdict if isinstance(verdict, str) and verdict else UNPINNED,
                                _pin_label(obj), _pcrs(obj.get("ExpectedMeasurements"))))
    per_enclave: dict[str, list[Any]] = {}
    since = now - EXITED_WINDOW
    for obj in _list(_dict(events).get("events")):
        event = Event.from_json(obj)
        if event is None or not event.enclave_id:
            continue
        with contextlib.suppress(ValueError):
            if event.when < since:
                continue
        per_enclave.setdefault(event.enclave_id, []).append(event)
    return Snapshot(
        st, matches, expected, {}, started, exited=exited, pins=pins,
        events={k: v[-EVENTS_PER_ENCLAVE:] for k, v in per_enclave.items()},
    )


# -- the source


class RemoteSource(Source):
    """A remote host, through its agent. Blocking calls (the App runs them in thread workers)."""

    read_only = True
    schemes = ()
    console_unavailable = f"console: {NOT_THROUGH_AGENT} (run `nitrodeck console` on the host)"
    eif_unavailable = f"details (describe-eif): {NOT_THROUGH_AGENT}"
    commands_unavailable = f"the host's nitro-cli commands: {NOT_THROUGH_AGENT}"

    def __init__(self, entry: HostEntry, transport: Transport, *, clock: Callable[[], datetime] | None = None,
                 watch: bool = True) -> None:
        self.entry = entry
        self.transport = transport
        self.read_only_reason = RemoteReadOnly(entry.name)
        self.backend = RemoteBackend()
        self._clock = clock
        #: whether change_watcher() follows the agent's event stream (a frozen world has none)
        self._watch = watch
        self._host: tuple[str, HostStats] | None = None
        self._host_taken: str | None = None

    @classmethod
    def connect(cls, entry: HostEntry, token: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> RemoteSource:
        """Over the network: the entry's URL, its token (already read, mode-checked) and CA bundle."""
        tokens = {entry.token_file: token} if entry.token_file and token else {}
        return cls(entry, AgentClient(entry, timeout, tokens))

    def now(self) -> datetime:
        return self._clock() if self._clock is not None else datetime.now(UTC)

    def unavailable_actions(self) -> dict[str, str]:
        return {
            "test_sign": f"{NOT_THROUGH_AGENT}: test-sign on the host (`nitrodeck sign`), or run its agent with "
                         "--probe-sign (nitrodeck_testsign_last_ok)",
            "doctor": f"{NOT_THROUGH_AGENT}: run `nitrodeck doctor` on the host",
            "audit_log": f"{NOT_THROUGH_AGENT}: the audit log stays on the host (`nitrodeck` there, then A)",
        }

    # -- reading

    def _get(self, path: str) -> Any:
        where = f"{self.entry.name} ({self.entry.url})"
        try:
            code, body = self.transport.get(path)
        except (OSError, http.client.HTTPException) as exc:
            reason = str(exc) or type(exc).__name__
            raise AgentUnavailable(f"{where} did not answer {path.split('?')[0]}: {safe_text(reason)[:160]}",
                                   hint="is `nitrodeck serve` running there, and is the URL reachable from here?") \
                from None
        except ValueError as exc:
            raise AgentUnavailable(f"{where}: {safe_text(str(exc))[:160]}", hint="is this URL a nitrodeck agent?") \
                from None
        if code == 401:
            raise AgentUnavailable(f"{where} refused the token (401)",
                                   hint="check token_file: it must hold the token the agent was started with")
        if code != 200:
            detail = body.get("error") if isinstance(body, dict) else None
            if isinstance(detail, dict):
                detail = detail.get("message")
            raise AgentUnavailable(f"{where}: {path.split('?')[0]} answered {code}"
                                   + (f": {safe_text(str(detail))[:160]}" if detail else ""))
        return body

    def snapshot(self) -> Snapshot:
        status = self._get("/status")
        try:
            events = self._get("/events?since=24h&limit=1000")
        except AgentUnavailable:
            events = None  # an agent without a journal: no events in the detail pane, the rest is there
        snap = snapshot_from_agent(status, events, self.now())
        self.backend = RemoteBackend(snap.status.backend, snap.status.backend_display, snap.status.backend == "emulator")
        self._host = (snap.status.taken_at, snap.status.resources.host)
        return snap

    def host_stats(self) -> Any:
        """The agent's own sample, once per refresh of the agent (not this machine's CPU and memory)."""
        latest = self._host
        if latest is None or latest[0] == self._host_taken:
            return None
        self._host_taken = latest[0]
        return latest[1]

    def doctor(self) -> Any:
        return None  # the doctor checks the machine it runs on: `d` says to run it on the host

    def audit_entries(self) -> list[dict[str, Any]]:
        return []  # the audit log stays on the host (the dashboard hides A)

    def eif_library(self) -> list[Path]:
        return []  # launching is refused: nothing to offer

    def change_watcher(self) -> ChangeWatcher | None:
        if not self._watch or not isinstance(self.transport, AgentClient):
            return None
        return AgentEvents(self.transport)

    # -- every change is refused here, before any request (the agent would answer 405 anyway)

    def _refuse(self, what: str) -> ReadOnlyError:
        reason = self.read_only_reason
        return ReadOnlyError(f"{what} is refused: {reason.detail}", hint=reason.hint)

    def describe_eif(self, path: Path) -> EifInfo:
        raise AgentUnavailable(f"describe-eif: {NOT_THROUGH_AGENT}")

    def build(self, req: BuildRequest, stage: Callable[[str], None]) -> BuildResult:
        raise self._refuse("build")

    def pin(self, image_name: str, measurements: Measurements, eif_path: str | None = None) -> None:
        raise self._refuse("pin")

    def launch(self, req: LaunchRequest) -> RunInfo:
        raise self._refuse("launch")

    def terminate(self, enclave_id: str) -> Any:
        raise self._refuse("terminate")

    def terminate_all(self) -> Any:
        raise self._refuse("terminate-all")

    def test_sign(self, enclave: EnclaveInfo, payload: bytes, scheme: str) -> Any:
        raise AgentUnavailable(f"test-sign: {self.unavailable_actions()['test_sign']}")

    def console(self, enclave_id: str) -> AsyncIterator[str]:
        raise AgentUnavailable(f"the console: {NOT_THROUGH_AGENT}")

    def docker_images(self) -> list[str]:
        raise self._refuse("build")


class AgentEvents:
    """The agent's ``/events/stream`` as a :class:`~console.screens.source.ChangeWatcher`: :meth:`wait`
    returns True once an event (a launch, an exit, a terminate) arrived since the last wait, and once more
    :data:`SECOND_LOOK_S` later. One thread reads the stream and reconnects with a growing pause when it
    drops; :meth:`close` shuts the socket so that the reader wakes at once."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self._changed = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        #: time.monotonic() of the second look that is due, if any
        self._again_at: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"agent-events-{client.entry.name}", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed.is_set():
            now = time.monotonic()
            again = self._again_at
            limits = [t - now for t in (deadline, again) if t is not None]
            if self._changed.wait(max(0.0, min(limits)) if limits else None):
                self._changed.clear()
                if not self._closed.is_set():
                    self._again_at = time.monotonic() + SECOND_LOOK_S
                    return True
                return False
            now = time.monotonic()
            if again is not None and now >= again:
                self._again_at = None
                return True
            if deadline is not None and now >= deadline:
                return False
        return False

    def close(self) -> None:
        self._closed.set()
        self._changed.set()  # a waiter returns now
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        pause = 1.0
        while not self._closed.is_set():
            conn = self.client.connection(STREAM_TIMEOUT_S)
            with self._lock:
                if self._closed.is_set():
                    return
                self._conn = conn
            try:
                conn.request("GET", self.client.base + "/events/stream", headers=self.client.headers)
                resp = conn.getresponse()
                if resp.status == 200:
                    pause = 1.0
                    self._read(resp)
            except (OSError, ValueError, http.client.HTTPException):
                pass  # dropped, refused, timed out: the poll still refreshes; try again after a pause
            finally:
                with self._lock:
                    self._conn = None
                with contextlib.suppress(OSError):
                    conn.close()
            self._closed.wait(pause)
            pause = min(pause * 2, 30.0)

    def _read(self, resp: http.client.HTTPResponse) -> None:
        while not self._closed.is_set():
            line = resp.readline(MAX_STREAM_LINE)
            if not line:
                return  # the agent closed the stream
            if line.startswith(b"event:"):
                self._changed.set()


def open_remote(entry: HostEntry, tokens: dict[str, str], timeout: float = DEFAULT_TIMEOUT_S) -> RemoteSource:
    """The fleet's opener: a host's source with the token its hosts file names."""
    return RemoteSource.connect(entry, tokens.get(entry.token_file) if entry.token_file else None, timeout)


__all__ = ["READ_ONLY_DETAIL", "AgentEvents", "AgentUnavailable", "RemoteSource", "open_remote", "snapshot_from_agent"]
