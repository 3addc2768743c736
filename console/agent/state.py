"""The agent's view of the host: one cached snapshot, refreshed when the kernel says something changed.

Scrapes never run nitro-cli: ``describe-enclaves`` runs in one background thread when
:class:`core.ops.watch.DirWatcher` sees the backend's enclave folders change (a launch, an exit), and on
a slow safety poll; /metrics and /status serve the last snapshot, so a scrape costs a lock and a format.
A failed refresh keeps the last good state, counts ``nitrodeck_scrape_errors_total`` and says why.

The Lifecycle is opened read-only: no endpoint and no flag can change an enclave.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil

from core.errors import NitrodeckError
from core.ops.lifecycle import Lifecycle, Status
from core.ops.metrics import AgentCounters, AgentSnapshot
from core.ops.watch import SAFETY_POLL_S, DirWatcher

log = logging.getLogger("nitrodeck.agent")

#: the safety poll on top of the watcher: a change the watcher cannot see still shows within this
#: /status lists the exits of this long back, at most this many (as `status --json` does)
EXITED_WINDOW = timedelta(hours=24)
MAX_EXITED = 16
PROBE_PAYLOAD = b"nitrodeck agent test-sign probe"


def open_journal(lifecycle: Lifecycle) -> Any | None:
    """The lifecycle journal (core/ops/journal.py, issue 10) or None on a build without it."""
    journal = getattr(lifecycle, "journal", None)
    if journal is not None:
        return journal
    try:
        from core.ops.journal import Journal  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return Journal()


def _uptime(pid: int, launched: dict[str, float], enclave_id: str, now: float) -> float | None:
    """From the process that holds the enclave (nitro-cli's or the emulator's); else from the journal."""
    try:
        return max(0.0, now - psutil.Process(pid).create_time())
    except (psutil.Error, ValueError, OSError):
        pass
    started = launched.get(enclave_id)
    return None if started is None else max(0.0, now - started)


class HostState:
    """Holds the current :class:`AgentSnapshot`; :meth:`start` runs the watcher, the poll and the probe."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        *,
        safety_poll: float = SAFETY_POLL_S,
        probe_every: float | None = None,
        on_refresh: Callable[[AgentSnapshot], None] | None = None,
    ) -> None:
        if not lifecycle.read_only:
            raise ValueError("the agent's Lifecycle must be read-only")
        self.lifecycle = lifecycle
        self.journal = open_journal(lifecycle)
        self.safety_poll = safety_poll
        self.probe_every = probe_every
        self.on_refresh = on_refresh
        self.counters = AgentCounters()
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._snapshot = AgentSnapshot(status=None, testsign={} if probe_every else None, error="starting")
        self._probe: dict[str, bool] = {}
        self._stop = threading.Event()
        self._watcher: DirWatcher | None = None
        self._threads: list[threading.Thread] = []
        self.started_at = time.time()

    # -- reading (any thread)

    def current(self) -> tuple[AgentSnapshot, AgentCounters]:
        with self._lock:
            return self._snapshot, self.counters

    @property
    def snapshot(self) -> AgentSnapshot:
        return self.current()[0]

    def count_unauthorized(self) -> None:
        with self._lock:
            self.counters.unauthorized += 1

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- refreshing

    def refresh(self) -> AgentSnapshot:
        """Take the host's state now (describe-enclaves, resources, verdicts, journal counts)."""
        with self._refresh_lock:
            previous = self.snapshot
            try:
                status = self.lifecycle.status()
                judgements = self._judge(status)
                verdicts = {k: j.verdict for k, j in judgements.items()}
                events = self._journal_events()
                exits, launched = self._journal_facts(events)
                now = time.time()
                uptimes = {}
                for e in status.enclaves:
                    value = _uptime(e.process_id, launched, e.enclave_id, now)
                    if value is not None:
                        uptimes[e.enclave_id] = value
                probe = None
                if self.probe_every:
                    running = {e.label for e in status.enclaves}
                    probe = {name: ok for name, ok in self._probe.items() if name in running}
                snap = AgentSnapshot(status, verdicts, uptimes, exits, probe, taken=now, judgements=judgements,
                                     exited=self._exited(events, now))
            except Exception as exc:  # noqa: BLE001 - any failure is a counted scrape error, never a dead watcher
                with self._lock:
                    self.counters.scrape_errors += 1
                message = exc.message if isinstance(exc, NitrodeckError) else f"{type(exc).__name__}: {exc}"
                snap = dataclasses.replace(previous, error=message[:500])
                log.warning("refresh failed: %s", message)
            with self._lock:
                self._snapshot = snap
        if self.on_refresh is not None:
            with contextlib.suppress(Exception):
                self.on_refresh(snap)
        return snap

    def _judge(self, status: Status) -> dict[str, Any]:
        """Each enclave's verdict against the pin of its EIF (core.ops.expected.Judgement)."""
        from core.ops.expected import Judgement

        out: dict[str, Any] = {}
        for e in status.enclaves:
            try:
                out[e.enclave_id] = self.lifecycle.judge(e)  # records a pcr-mismatch once, as status does
            except NitrodeckError:
                out[e.enclave_id] = Judgement("unpinned")
        return out

    def _journal_events(self) -> list[Any]:
        if self.journal is None:
            return []
        try:
            return list(self.journal.read())
        except Exception as exc:  # noqa: BLE001 - a broken journal must not take /metrics down
            log.warning("journal unreadable: %s", exc)
            return []

    def _exited(self, events: list[Any], now: float) -> list[dict[str, Any]]:
        """The recent exits as `status --json` lists them, each with the verdict of its enclave (a remote
        dashboard shows them as EXITED rows)."""
        from console.cmd_lifecycle import exited_json

        since = datetime.fromtimestamp(now, UTC) - EXITED_WINDOW
        out: list[dict[str, Any]] = []
        for event in reversed(events):
            if event.event != "exited":
                continue
            with contextlib.suppress(ValueError):
                if event.when < since:
                    break  # the journal is in time order: nothing older is wanted
            out.append(exited_json(self.lifecycle, event))
            if len(out) >= MAX_EXITED:
                break
        return out

    def _journal_facts(self, events: list[Any]) -> tuple[dict[str, int], dict[str, float]]:
        """Exits per enclave name, and when each enclave was launched, from the journal."""
        exits: Counter[str] = Counter()
        launched: dict[str, float] = {}
        for event in events:
            if event.event == "exited":
                exits[event.name or event.enclave_id or "unknown"] += 1
            elif event.event == "launched" and event.enclave_id:
                with contextlib.suppress(ValueError):
                    launched[event.enclave_id] = event.when.timestamp()
        return dict(exits), launched

    # -- the background threads

    def start(self) -> None:
        self.refresh()
        dirs = self.lifecycle.backend.watch_dirs()
        # made before the thread, so that stop() always finds it to close
        self._watcher = DirWatcher(dirs) if dirs else None
        self._spawn(self._watch_loop, "agent-watch")
        if self.probe_every:
            self._spawn(self._probe_loop, "agent-probe")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            if self._watcher is not None:
                self._watcher.wait(timeout=self.safety_poll)
            else:
                self._stop.wait(self.safety_poll)
            if self._stop.is_set():
                return
            self.refresh()

    def _probe_loop(self) -> None:
        from core.ops.testsign import test_sign

        assert self.probe_every is not None
        while not self._stop.is_set():
            status = self.snapshot.status
            results: dict[str, bool] = {}
            for e in status.enclaves if status else []:
                if e.state != "RUNNING" or self._stop.is_set():
                    continue
                try:
                    report = test_sign(self.lifecycle, e.enclave_id, PROBE_PAYLOAD,
                                       expected_pcrs=self.lifecycle.expected_for(e), timeout=10.0)
                    results[e.label] = bool(report.ok)
                except Exception as exc:  # noqa: BLE001 - any failure is a failing probe, never a dead agent
                    log.warning("test-sign probe of %s failed: %s", e.label, exc)
                    results[e.label] = False
            self._probe = results
            self.refresh()
            self._stop.wait(self.probe_every)

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.close()
        for thread in self._threads:
            thread.join(timeout=5)
