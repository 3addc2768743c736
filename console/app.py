"""The nitrodeck TUI: a dashboard of enclaves, resources and consoles, with every action a dialog.

The dashboard is a screen, :class:`Dashboard`, over one :class:`~console.screens.source.Source`:
:class:`NitrodeckApp` shows it for this host, and `nitrodeck fleet` pushes one per remote host (fed by
that host's agent, console/agent/remote.py) on top of its host table.

Threading rule: every call into core (which runs nitro-cli) happens in a named thread worker that
only posts messages; handlers on the dashboard update widgets. Worker failures all land in one place,
:meth:`Dashboard.on_worker_state_changed`, which shows them in the dialog that asked, or in an
error dialog. Read-only is a reactive bound to the bindings: ``check_action`` hides every
mutating key and the palette leaves those commands out; the lifecycle refuses on its own too.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.events import Resize
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input
from textual.worker import Worker, WorkerState, get_current_worker

from console import commands
from console.cells import age_text
from console.first_frame import FirstFrame
from console.flags import MAX_TIMEOUT_SECONDS
from console.messages import (
    ActionFinished,
    BuildStage,
    CommandRan,
    ConsoleEnded,
    DockerImages,
    DoctorDone,
    StatusRefreshed,
)
from console.screens.base import Dialog
from console.screens.source import ChangeWatcher, EarlySource, ExitedRow, Snapshot, Source, run_async_iter
from console.widgets.command_log import CommandLog
from console.widgets.console_pane import ConsolePane
from console.widgets.detail import DetailPane
from console.widgets.enclave_table import EnclaveTable
from console.widgets.header import StatusHeader
from console.widgets.resources import ResourcesPane
from core import home
from core.errors import NitrodeckError, ReadOnlyError
from core.models import BuildRequest, EnclaveInfo, LaunchRequest, Measurements
from core.ops.journal import ended_when
from core.ops.lifecycle import DEVICE_ACTIONS
from core.ops.watch import SAFETY_POLL_S
from core.text import safe_text

#: below this width the dashboard shows the table and one pane at a time
WIDE_COLUMNS = 120
HISTORY = 60
#: the watch thread looks up this often even when nothing changes (it only checks that it should go on)
WATCH_WAKE_S = 15.0
#: describe-enclaves runs when the watcher sees a change; this is the slow safety poll on top
#: host CPU/memory samples for the sparklines (psutil, in this process; each the average since the last,
#: so 60 of them draw the last 5 minutes). Painting a sample costs ~5 ms whatever it shows (Textual
#: draws every pane around the sparklines again): every 2 s that was about half of the idle dashboard
HOST_SAMPLE_S = 5.0
#: how often the doctor's checks run again while the dashboard is open (one run costs ~0.1 s of CPU in
#: probes and a subprocess: every 10 minutes keeps the idle dashboard near htop's cost; `d` runs them now)
DOCTOR_SECONDS = 600.0
#: the longest the EIFs' describe-eif waits for the first paint (a screen that never paints: a test's)
FIRST_PAINT_WAIT_S = 2.0
#: exited enclaves kept in the table (their console logs stay readable)
MAX_GONE = 16
PANES = ("detail", "resources", "console", "commands")


def _while_shown(handler: Callable[..., None]) -> Callable[..., None]:
    """Drop a message that arrives after the dashboard is gone (workers and streams finish during
    shutdown; their messages must not query a screen stack that no longer exists)."""

    def guarded(dash: Dashboard, *args: Any) -> None:
        if dash.shown:
            handler(dash, *args)

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


def _loaded(module: str, name: str) -> type | None:
    """A screen class if its module is loaded: dialogs are imported when first opened (they cost the
    first paint ~150 ms, the doctor's screen alone ~100), so none of them can be on screen before."""
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


def _needs_device(action: str) -> bool:
    """A dashboard action that needs the Nitro Enclaves device (launch, terminate, terminate-all)."""
    command = commands.BY_ACTION.get(action)
    return command is not None and command.id in DEVICE_ACTIONS


class Dashboard(Screen[None]):
    """One host's dashboard: enclaves, detail, console, resources, command log, every key of the registry."""

    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses live elsewhere; applies app-wide
    BINDINGS = commands.bindings()  # type: ignore[assignment]  # list[Binding] is what Screen wants, invariance aside
    COMMANDS = {commands.CommandsProvider, commands.EnclavesProvider, commands.EifProvider}

    read_only: reactive[bool] = reactive(False, bindings=True)
    paused: reactive[bool] = reactive(False, bindings=True)

    def __init__(
        self, source: Source, refresh_seconds: float = SAFETY_POLL_S, console_max_lines: int = 5000
    ) -> None:
        super().__init__()
        self.source = source
        #: the safety poll: describe-enclaves runs when the watcher reports a change, and this often anyway
        #: (0: never on its own, as in the frozen world and tests)
        self.refresh_seconds = refresh_seconds
        #: a change arrived while a describe was running: run another when it finishes
        self._refresh_again = False
        self._watcher: ChangeWatcher | None = None
        self.console_max_lines = console_max_lines
        self.snapshot: Snapshot | None = None
        self.refresh_error: str | None = None
        #: enclaves seen this session that are gone now: their kept console log stays readable
        self.gone: dict[str, EnclaveInfo] = {}
        #: when this session noticed each of them gone
        self.gone_at: dict[str, datetime] = {}
        #: exits the lifecycle journal knows (any process may have recorded them), by enclave ID
        self.exited_rows: dict[str, ExitedRow] = {}
        #: exits at or before this time are cleared from view (the journal keeps them)
        self.cleared_before: datetime | None = None
        self.started_at = source.now()
        self._notified: set[str] = set()
        self.console_for: str | None = None
        self.filter_text = ""
        #: the table's sort: a column name (None: as describe-enclaves lists them) and the direction
        self.sort_column: str | None = None
        self.sort_reverse = False
        #: the Age column's texts as last drawn (enclave ID -> "4m"): a tick redraws only when one changes
        self._ages_shown: dict[str, str] = {}
        self.pane = "console"
        cpu, mem = source.host_history()
        self.cpu_history: deque[float] = deque(cpu, maxlen=HISTORY)
        self.mem_history: deque[float] = deque(mem, maxlen=HISTORY)
        #: the dialog waiting for each kind of action's outcome
        self._waiting: dict[str, Dialog[Any]] = {}
        #: the last doctor run (core.ops.doctor.DoctorReport); its failures show in the header
        self.doctor_report: Any = None
        self.set_reactive(Dashboard.read_only, source.read_only)
        #: why changes are refused (flag, environment, device); a device reason blocks only launch/terminate
        self.read_only_reason: Any = getattr(source, "read_only_reason", None)
        self.device_blocked = bool(self.read_only_reason is not None and not self.read_only_reason.refuses_everything)
        #: set once the first snapshot is on screen: the doctor and the EIFs' describe-eif wait for it,
        #: so that they do not compete with the first paint for the one interpreter lock
        self._first_paint = threading.Event()
        #: actions this source cannot serve (a remote host: test-sign, doctor, audit log), action -> why
        self.unavailable: dict[str, str] = dict(source.unavailable_actions())

    # -- layout

    def _dash(self, selector: str, expect_type: type[Any] | None = None) -> Any:
        """Query the dashboard's own widgets, whichever screen is on top."""
        return self.query_one(selector, expect_type) if expect_type else self.query_one(selector)

    def _on_top(self) -> Screen[Any] | None:
        """The app's top screen (None before this dashboard is on a running app's stack)."""
        return self.app.screen_stack[-1] if self.is_attached and self.app.screen_stack else None

    @property
    def shown(self) -> bool:
        """Still on the app's screen stack: messages that arrive after the app shut down, or after the
        fleet closed this host's dashboard, are dropped instead of querying widgets that are gone."""
        return self.is_attached and self in self.app.screen_stack

    def action_quit(self) -> None:
        """`q`: quit nitrodeck, or go back to what opened this dashboard (the fleet's host table)."""
        if self.app.screen_stack and self.app.screen_stack[0] is not self:
            self.dismiss()
        else:
            self.app.exit()

    def action_command_palette(self) -> None:
        self.app.action_command_palette()

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        with Container(id="main"):
            yield EnclaveTable(id="enclaves")
            yield DetailPane(id="detail", classes="pane")
            yield ConsolePane(max_lines=self.console_max_lines, id="console", classes="pane -shown")
            yield ResourcesPane(id="resources", classes="pane")
            yield CommandLog(id="commands", classes="pane")
        yield Input(placeholder="filter enclaves (enter: keep, esc: clear)", id="table-filter", classes="hidden")
        yield Footer()

    def on_mount(self) -> None:
        self._dash("#enclaves", EnclaveTable).border_title = "Enclaves"
        self._dash("#detail").border_title = "Detail"
        self._dash("#console").border_title = "Console"
        self._dash("#resources").border_title = "Resources"
        self._dash("#commands").border_title = "Command log" + (
            f" ({self.source.commands_unavailable})" if self.source.commands_unavailable else "")
        self._layout_for(self.size.width)
        self._dash("#detail", DetailPane).set_mode(self.read_only, self.device_blocked)
        for record in self.source.initial_commands():
            self._dash("#commands", CommandLog).add(record)
        self._render_header()
        self._dash("#enclaves", EnclaveTable).focus()
        first = self.source.ready_snapshot()
        if first is not None:
            # taken while Textual loaded: the first frame already lists the enclaves
            self._status_refreshed(StatusRefreshed(first))
            self._eif_details(first)
        else:
            self.refresh_status()
        if self.refresh_seconds > 0:
            self.set_interval(self.refresh_seconds, self._tick, name="refresh-timer")
            # host CPU and memory come from psutil in this process: no subprocess, no describe
            self.set_interval(HOST_SAMPLE_S, self._sample_host, name="host-sample")
            # the doctor probes the host (Docker, nitro-cli, metadata): far less often than describe
            self.set_interval(DOCTOR_SECONDS, self._doctor_tick, name="doctor-timer")
        # made here, not in the worker, so that on_unmount always finds it to close: a watcher made
        # by a thread that started late would block the app's exit forever
        self._watcher = self.source.change_watcher()
        if self._watcher is not None:
            self._watch_changes(self._watcher)

    def on_unmount(self) -> None:
        self._first_paint.set()  # a refresh worker waiting for it must not hold up the exit
        if self._watcher is not None:
            self._watcher.close()  # wakes the watch thread so that it ends
            self._watcher = None  # and it ends even if the wait it was in reports a change

    def on_resize(self, event: Resize) -> None:
        self._layout_for(event.size.width)

    def _layout_for(self, width: int) -> None:
        # the table picks its own columns for its width (see EnclaveTable.show)
        self._dash("#main").set_class(width < WIDE_COLUMNS, "-narrow")

    # -- read-only and the registry

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        on_top = self._on_top()
        if action in commands.BY_ACTION and action not in ("quit", "command_palette") and isinstance(on_top, Dialog):
            return False  # dashboard keys do nothing under a dialog
        if self.device_blocked and _needs_device(action):
            return False
        if action in self.unavailable:
            return False
        return not (self.read_only and action in commands.MUTATING_ACTIONS)

    def watch_read_only(self, read_only: bool) -> None:
        if self._is_mounted:  # App.is_mounted is a method about widgets, not the app
            self._render_header()
            self._dash("#detail", DetailPane).set_mode(read_only, self.device_blocked)

    def watch_paused(self, paused: bool) -> None:
        if self._is_mounted:
            self._render_header()
            if not paused and self._refresh_again:
                self.request_refresh()  # changes seen while paused

    def _refuse_read_only(self, what: str) -> bool:
        """Defence in depth for paths that do not come through a key (the palette, tests)."""
        reason = self.read_only_reason
        if self.read_only or (self.device_blocked and what in DEVICE_ACTIONS):
            why = reason.detail if reason is not None else "nitrodeck runs read-only"
            self.notify(f"{what} is refused: {why}", severity="warning")
            return True
        return False

    # -- refresh

    def _tick(self) -> None:
        if self.paused:
            return
        self.request_refresh()

    def request_refresh(self) -> None:
        """Describe again now, or right after the describe that is running (never two at once, and a
        change seen during a describe is never lost)."""
        if any(w.group == "refresh" and w.state in (WorkerState.PENDING, WorkerState.RUNNING) for w in self.workers):
            self._refresh_again = True
            return
        self._refresh_again = False
        self.refresh_status()

    def _enclaves_changed(self) -> None:
        if self.paused:
            self._refresh_again = True  # resuming refreshes
            return
        self.request_refresh()

    @work(thread=True, exclusive=True, exit_on_error=False, group="watch", name="watch", description="inotify on the enclave folders")
    def _watch_changes(self, watcher: ChangeWatcher) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled and self._watcher is watcher:
            # a bounded wait, so that even a wake-up lost to some future bug costs seconds, not a hang
            if watcher.wait(timeout=WATCH_WAKE_S):
                try:
                    self.app.call_from_thread(self._enclaves_changed)
                except RuntimeError:
                    return  # the app is shutting down

    def _sample_host(self) -> None:
        if self.paused:
            return
        self._tick_ages()
        stats = self.source.host_stats()
        if stats is None:
            return
        self.cpu_history.append(stats.cpu_percent)
        self.mem_history.append(100.0 * stats.mem_used / stats.mem_total if stats.mem_total else 0.0)
        if self.pane == "resources" or not self._dash("#main").has_class("-narrow"):
            self._dash("#resources", ResourcesPane).show_host(list(self.cpu_history), list(self.mem_history))

    @work(thread=True, exclusive=True, exit_on_error=False, group="refresh", name="refresh", description="describe-enclaves and resources")
    def refresh_status(self) -> None:
        snap = self.source.snapshot()
        self.post_message(StatusRefreshed(snap))
        self._post_eif_details(snap)

    @work(thread=True, exit_on_error=False, group="refresh", name="refresh-details", description="describe-eif of the enclaves' EIFs")
    def _eif_details(self, snap: Snapshot) -> None:
        self._post_eif_details(snap)

    def _post_eif_details(self, snap: Snapshot) -> None:
        # the table paints first; describing the EIFs (each read whole) follows
        self._first_paint.wait(FIRST_PAINT_WAIT_S)
        detailed = self.source.eif_details(snap)
        if detailed is not None:
            self.post_message(StatusRefreshed(detailed))

    def _doctor_tick(self) -> None:
        if self.paused or any(w.group == "doctor" and w.state in (WorkerState.PENDING, WorkerState.RUNNING)
                              for w in self.workers):
            return
        self.run_doctor()

    @work(thread=True, exclusive=True, exit_on_error=False, group="doctor", name="doctor", description="doctor checks")
    def run_doctor(self) -> None:
        self.post_message(DoctorDone(self.source.doctor()))

    @on(DoctorDone)
    def _doctor_done(self, message: DoctorDone) -> None:
        if not self.shown:
            return
        self.doctor_report = message.report
        self._render_header()
        for screen in self.app.screen_stack:
            if (doctor := _loaded("console.screens.doctor", "DoctorScreen")) and isinstance(screen, doctor):
                screen.show_report(message.report)

    @on(StatusRefreshed)
    def _status_refreshed(self, message: StatusRefreshed) -> None:
        if not self.shown:
            return  # arrived while the app shuts down (or the fleet closed this host's dashboard)
        snap = message.snapshot
        previous = self.snapshot
        self.snapshot = snap
        self.refresh_error = None
        running = {e.enclave_id for e in snap.enclaves}
        now = self.source.now()
        if previous is not None:
            for enclave in previous.enclaves:
                if enclave.enclave_id not in running:
                    self.gone[enclave.enclave_id] = enclave
                    self.gone_at.setdefault(enclave.enclave_id, now)
        for enclave_id in running:
            self.gone.pop(enclave_id, None)
            self.gone_at.pop(enclave_id, None)
        while len(self.gone) > MAX_GONE:
            self.gone_at.pop(next(iter(self.gone)), None)
            self.gone.pop(next(iter(self.gone)))
        self.exited_rows = {row.enclave.enclave_id: row for row in snap.exited}
        self._notify_exits(snap)
        for warning in snap.journal_warnings:  # a full disk, a torn line: say so once, never fail
            if warning not in self._notified:
                self._notified.add(warning)
                self.notify(warning, title="journal", severity="warning", timeout=10)
        self._render_all()
        if previous is None:
            self.call_after_refresh(self._first_paint_done)

    def _first_paint_done(self) -> None:
        """The enclaves are on screen (or the first describe failed): now the slower work."""
        if self._first_paint.is_set():
            return
        self._first_paint.set()
        if self.shown:
            self.run_doctor()

    # -- exits

    def _notify_exits(self, snap: Snapshot) -> None:
        """One notification per enclave that exited while this TUI runs (whoever recorded it)."""
        for row in snap.exited:
            enclave_id = row.enclave.enclave_id
            if enclave_id in self._notified or row.event.when <= self.started_at:
                continue
            self._notified.add(enclave_id)
            status = row.event.get("exit_status")
            self.notify(
                f"{row.enclave.label} exited after {_duration(row.event.get('uptime_s'))}"
                + (f" (status {status})" if status is not None else "")
                + ": its console and events are kept",
                title="enclave exited",
                severity="warning",
                timeout=10,
            )
        for enclave_id, enclave in self.gone.items():
            if enclave_id in self._notified or enclave_id in self.exited_rows:
                continue
            self._notified.add(enclave_id)
            if not any(e.event == "terminated" for e in snap.events.get(enclave_id, [])):
                self.notify(f"{enclave.label} is gone", title="enclave gone", severity="warning", timeout=10)

    def _exit_time(self, enclave_id: str) -> datetime | None:
        row = self.exited_rows.get(enclave_id)
        if row is not None:
            return ended_when(row.event)  # when it ended (the backend knows), else when it was noticed
        return self.gone_at.get(enclave_id)

    def gone_rows(self) -> list[EnclaveInfo]:
        """Exited enclaves to show: the journal's and this session's, newest exit first, not cleared."""
        rows: dict[str, EnclaveInfo] = {k: r.enclave for k, r in self.exited_rows.items()}
        for enclave_id, enclave in self.gone.items():
            rows.setdefault(enclave_id, enclave)
        cleared = self.cleared_before
        shown = [
            e for e in rows.values()
            if cleared is None or (self._exit_time(e.enclave_id) or cleared) > cleared
        ]
        shown.sort(key=lambda e: self._exit_time(e.enclave_id) or self.started_at, reverse=True)
        return shown[:MAX_GONE]

    def exit_note(self, enclave_id: str) -> str:
        """The state text of an exited row: ``EXITED 0.4s, 12s ago``."""
        when = self._exit_time(enclave_id)
        ago = f", {_duration((self.source.now() - when).total_seconds())} ago" if when is not None else ""
        row = self.exited_rows.get(enclave_id)
        if row is not None:
            return f"EXITED {_duration(row.event.get('uptime_s'))}{ago}"
        snap = self.snapshot
        terminated = snap is not None and any(e.event == "terminated" for e in snap.events.get(enclave_id, []))
        return ("TERMINATED" if terminated else "EXITED") + ago

    def action_clear_exited(self) -> None:
        count = len(self.gone_rows())
        self.cleared_before = self.source.now()
        self.gone.clear()
        self.gone_at.clear()
        self.notify(f"cleared {count} exited enclave{'s' if count != 1 else ''} from view (the journal keeps them)")
        if self.snapshot is not None:
            self._render_all()

    def _render_header(self) -> None:
        backend = self.source.backend
        taken = self.snapshot.status.taken_at if self.snapshot else None
        self._dash("#header", StatusHeader).show(
            instance_id=self.snapshot.status.instance_id if self.snapshot else None,
            backend_name=backend.display_name,
            is_emulator=backend.is_emulator,
            read_only=self.read_only or self.device_blocked,
            read_only_label=self.read_only_reason.label if self.read_only_reason is not None else None,
            taken_at=taken,
            paused=self.paused,
            # a refresh that failed, else what the last one may be missing (an enclave that did not answer)
            error=self.refresh_error or next(iter(getattr(self.snapshot.status, "warnings", None) or []), None)
            if self.snapshot else self.refresh_error,
            doctor=self._doctor_badge(),
        )

    def _doctor_badge(self) -> str | None:
        failing = list(getattr(self.doctor_report, "failing", None) or [])
        if not failing:
            return None
        more = f", +{len(failing) - 1}" if len(failing) > 1 else ""
        return f"{len(failing)} failing ({failing[0].title}{more})"

    def _render_resources(self) -> None:
        snap = self.snapshot
        if snap is None:
            return
        self._dash("#resources", ResourcesPane).show(
            snap.status.resources, snap.enclaves + self.gone_rows(), list(self.cpu_history), list(self.mem_history)
        )

    def _render_all(self) -> None:
        self._render_header()
        snap = self.snapshot
        if snap is None:
            return
        table = self._dash("#enclaves", EnclaveTable)
        gone = self.gone_rows()
        matches = dict(snap.matches)
        for enclave_id, row in self.exited_rows.items():
            matches.setdefault(enclave_id, row.verdict)
        ages = self._ages()
        self._ages_shown = _age_texts(ages)
        table.show(snap.enclaves, matches, gone, self.filter_text,
                   ages=ages, sort=(self.sort_column, self.sort_reverse),
                   exit_notes={e.enclave_id: self.exit_note(e.enclave_id) for e in gone})
        title = f"Enclaves ({len(snap.enclaves)} running" + (f", {len(gone)} exited)" if gone else ")")
        if self.filter_text:
            # a kept filter must never be invisible: say what it is and how much it hides
            total = len(snap.enclaves) + len(gone)
            title += f"  filter: {self.filter_text}  {table.row_count} of {total}"
        table.border_title = title
        self._render_resources()
        self._selection_changed()

    def _tick_ages(self) -> None:
        """The Age column moves on between refreshes (a refresh may be 30 s away when nothing changes).
        Ages are whole minutes (console/cells.py) and the table is touched only when one of them shows
        another text: redrawing the table's cells costs ~15 ms of CPU, which every 5 s would be most of
        the idle dashboard's cost (issue 13); the detail pane has the start to the second."""
        if self.snapshot is not None and self.snapshot.started:
            ages = self._ages()
            shown = _age_texts(ages)
            if shown != self._ages_shown:
                self._ages_shown = shown
                self._dash("#enclaves", EnclaveTable).show_ages(ages)

    def _ages(self) -> dict[str, float]:
        """Seconds each enclave has been up (from when its process started), by enclave ID."""
        snap = self.snapshot
        if snap is None:
            return {}
        now = self.source.now()
        return {k: max(0.0, (now - started).total_seconds()) for k, started in snap.started.items()}

    # -- selection

    def selected(self) -> tuple[EnclaveInfo | None, bool]:
        """The selected enclave and whether it has exited."""
        enclave_id = self._dash("#enclaves", EnclaveTable).selected_id
        if enclave_id is None:
            return None, False
        if self.snapshot is not None:
            for enclave in self.snapshot.enclaves:
                if enclave.enclave_id == enclave_id:
                    return enclave, False
        if enclave_id in self.exited_rows:
            return self.exited_rows[enclave_id].enclave, True
        if enclave_id in self.gone:
            return self.gone[enclave_id], True
        return None, False

    @on(DataTable.RowHighlighted, "#enclaves")
    @_while_shown
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._selection_changed()

    @on(DataTable.RowSelected, "#enclaves")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_console()

    def _selection_changed(self) -> None:
        if not self.shown:
            return  # a highlight that arrives while the app shuts down
        enclave, exited = self.selected()
        snap = self.snapshot
        verdict = "unpinned"
        expected: dict[int, str] | None = None
        pin = None
        events = None
        row = self.exited_rows.get(enclave.enclave_id) if enclave is not None else None
        if enclave is not None and snap is not None:
            if row is not None:
                verdict, expected, pin = row.verdict, row.expected, row.pin
            elif exited:
                verdict = "exited"
            else:
                verdict = snap.matches.get(enclave.enclave_id, "unpinned")
                expected = snap.expected.get(enclave.enclave_id)
                pin = snap.pins.get(enclave.enclave_id)
            events = snap.events.get(enclave.enclave_id)
        eif = snap.eifs.get(enclave.enclave_id) if (snap is not None and enclave is not None) else None
        note = self.exit_note(enclave.enclave_id) if (enclave is not None and exited) else None
        started = snap.started.get(enclave.enclave_id) if (snap is not None and enclave is not None and not exited) else None
        self._dash("#detail", DetailPane).show(enclave, verdict, expected, exited, eif, pin, events, note,
                                               self.source.eif_unavailable, started)
        self._attach_console(enclave, exited)

    def _attach_console(self, enclave: EnclaveInfo | None, exited: bool) -> None:
        key = None if enclave is None else f"{enclave.enclave_id}:{'gone' if exited else 'live'}"
        if key == self.console_for:
            return
        self.console_for = key
        pane = self._dash("#console", ConsolePane)
        self.workers.cancel_group(self, "console")
        if enclave is None:
            pane.reset("")
            return
        if exited:
            pane.reset(enclave.label, "exited: kept log")
            row = self.exited_rows.get(enclave.enclave_id)
            last = row.event.get("last_console") if row is not None else None
            self.read_kept_log(enclave.enclave_id, pane, list(last) if isinstance(last, list) else None)
        elif enclave.debug_mode and self.source.console_unavailable:
            pane.reset(enclave.label, self.source.console_unavailable)
        elif enclave.debug_mode:
            pane.reset(enclave.label)
            self.stream_console(enclave.enclave_id, pane)
        else:
            pane.reset(enclave.label, "no console: not in debug mode")

    @work(thread=True, exclusive=True, exit_on_error=False, group="console", name="console", description="read the enclave console")
    def stream_console(self, enclave_id: str, pane: ConsolePane) -> None:
        # Only pane.push crosses threads (a deque append and a thread-safe post); widgets stay on the UI thread.
        worker = get_current_worker()
        run_async_iter(self.source.console(enclave_id), pane.push, lambda: worker.is_cancelled)
        if not worker.is_cancelled:
            self.post_message(ConsoleEnded(enclave_id, "console closed: the enclave exited"))

    @work(thread=True, exclusive=True, exit_on_error=False, group="console", name="console-log", description="read a kept console log")
    def read_kept_log(self, enclave_id: str, pane: ConsolePane, last_lines: list[str] | None = None) -> None:
        path = self.source.console_log(enclave_id)
        if path is None or not Path(path).is_file():
            if last_lines:  # the journal kept the last lines when the enclave exited
                for line in last_lines:
                    pane.push(str(line))
                self.post_message(ConsoleEnded(enclave_id, f"the last {len(last_lines)} lines, from the journal"))
                return
            self.post_message(ConsoleEnded(enclave_id, "no console log was kept"))
            return
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in deque(fh, maxlen=self.console_max_lines):
                pane.push(line.rstrip("\n"))
        self.post_message(ConsoleEnded(enclave_id, f"kept log {path}"))

    @on(ConsoleEnded)
    @_while_shown
    def _console_ended(self, message: ConsoleEnded) -> None:
        self._dash("#console", ConsolePane).set_note(message.reason)

    # -- the one worker-outcome handler

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if (
            worker.group == "refresh"
            and event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED)
            and self._refresh_again
            and not self.paused
        ):
            self.request_refresh()  # a change arrived while that describe ran: describe once more
        if event.state != WorkerState.ERROR:
            return
        err = worker.error or RuntimeError("unknown failure")
        name = worker.name
        if name in ("refresh", "refresh-details"):
            self.refresh_error = f"{getattr(err, 'code', type(err).__name__)}: {getattr(err, 'message', str(err))}"[:120]
            self._render_header()
            self.call_after_refresh(self._first_paint_done)
            return
        if name == "doctor":
            self.notify(f"doctor: {getattr(err, 'message', str(err))}"[:160], severity="warning")
            return
        if name in ("console", "console-log"):
            code = getattr(err, "code", type(err).__name__)
            self._dash("#console", ConsolePane).set_note(f"{code}: {getattr(err, 'message', str(err))}"[:160])
            return
        if not isinstance(err, NitrodeckError):
            self.log.error(f"worker {name} failed: {err!r}")
        dialog = self._waiting.pop(name, None)
        if dialog is not None and dialog.is_attached and self.app.screen is dialog:
            dialog.show_error(err)
        else:
            from console.screens.error import ErrorDialog

            self.app.push_screen(ErrorDialog(f"{name} failed", err))

    def _run_action(self, kind: str, fn: Callable[[], Any], dialog: Dialog[Any] | None, description: str) -> None:
        if dialog is not None:
            self._waiting[kind] = dialog

        def body() -> None:
            self.post_message(ActionFinished(kind, fn()))

        # eif-info is not exclusive: describing one EIF must not cancel describing another
        self.run_worker(
            body,
            thread=True,
            exclusive=kind != "eif-info",
            exit_on_error=False,
            group=f"action-{kind}",
            name=kind,
            description=description,
        )

    @on(ActionFinished)
    @_while_shown
    def _action_finished(self, message: ActionFinished) -> None:
        if message.kind == "eif-info":
            # several EIFs may be described one after another for the same dialog: keep it waiting
            path, info, size = message.result
            waiting = self._waiting.get("eif-info")
            launch = _loaded("console.screens.launch", "LaunchDialog")
            if launch is not None and isinstance(waiting, launch) and waiting.is_attached:
                waiting.eif_described(path, info, size)
            return
        dialog = self._waiting.pop(message.kind, None)
        if dialog is not None and dialog.is_attached:
            dialog.action_done(message.kind, message.result)
        if message.kind in ("launch", "terminate", "terminate-all", "pin"):
            self.notify(f"{message.kind}: done")
        if message.kind != "test-sign":
            self.refresh_status()

    @on(CommandRan)
    @_while_shown
    def _command_ran(self, message: CommandRan) -> None:
        record = message.record
        command = str(getattr(record, "command", ""))
        # The periodic describe would bury the actions; a failing one still shows. Console streams
        # restart whenever the selection moves: reading a console is not a command the operator ran.
        if getattr(record, "ok", False) and " describe-enclaves" in command:
            return
        if " console " in command:
            return
        self._dash("#commands", CommandLog).add(record)

    @on(BuildStage)
    @_while_shown
    def _build_stage(self, message: BuildStage) -> None:
        dialog = self._waiting.get("build")
        if dialog is not None and dialog.is_attached:
            dialog.stage(message.stage)

    @on(DockerImages)
    @_while_shown
    def _docker_images(self, message: DockerImages) -> None:
        build = _loaded("console.screens.build", "BuildDialog")
        if build is not None and isinstance(self.app.screen, build):
            self.app.screen.docker_images(message.tags, message.problem)

    # -- services the dialogs call (each runs in a worker)

    def start_build(self, req: BuildRequest, dialog: Dialog[Any]) -> None:
        if self._refuse_read_only("build"):
            return
        stage = partial(self._post_stage)
        self._run_action("build", lambda: self.source.build(req, stage), dialog, "build-enclave")

    def _post_stage(self, stage: str) -> None:
        self.post_message(BuildStage(stage))

    def start_pin(
        self, image_name: str | None, measurements: Measurements, dialog: Dialog[Any] | None,
        eif_path: str | None = None,
    ) -> None:
        """Pin under ``image_name``; None: under the image name of the EIF at ``eif_path`` (its own key)."""
        if self._refuse_read_only("pin"):
            return

        def pin() -> str:
            return self.source.pin(image_name, measurements, eif_path)

        self._run_action("pin", pin, dialog, "pin expected PCRs")

    def start_launch(self, req: LaunchRequest, dialog: Dialog[Any]) -> None:
        if self._refuse_read_only("launch"):
            return
        self._run_action("launch", lambda: self.source.launch(req), dialog, "run-enclave")

    def start_test_sign(self, enclave: EnclaveInfo, payload: bytes, scheme: str, dialog: Dialog[Any]) -> None:
        self._run_action("test-sign", lambda: self.source.test_sign(enclave, payload, scheme), dialog, "test-sign")

    def load_eif_info(self, path: Path, dialog: Dialog[Any]) -> None:
        self._run_action(
            "eif-info", lambda: (path, self.source.describe_eif(path), self.source.eif_size(path)), dialog, "describe-eif"
        )

    @work(thread=True, exclusive=True, exit_on_error=False, group="docker", name="docker-images", description="list local Docker images")
    def load_docker_images(self) -> None:
        try:
            tags = self.source.docker_images()
        except NitrodeckError as err:
            self.post_message(DockerImages([], f"{err.message}" + (f" ({err.hint})" if err.hint else "")))
            return
        self.post_message(DockerImages(tags))

    # -- actions (names come from console/commands.py)

    def action_build(self) -> None:
        if self._refuse_read_only("build"):
            return
        from console.screens.build import BuildDialog

        self.app.push_screen(BuildDialog(self.source.backend.is_emulator, self.source.eif_dir()))

    def action_launch(self) -> None:
        if self._refuse_read_only("launch"):
            return
        from console.screens.launch import LaunchDialog, PoolLimits

        limits = PoolLimits(self.source.free_memory_mib(self.snapshot), self.source.free_cpus(self.snapshot))
        self.app.push_screen(LaunchDialog(self.source.eif_library(), limits))

    def _running_selection(self, what: str) -> EnclaveInfo | None:
        enclave, exited = self.selected()
        if enclave is None or exited:
            self.notify(f"{what}: select a running enclave first", severity="warning")
            return None
        return enclave

    def action_terminate(self) -> None:
        if self._refuse_read_only("terminate"):
            return
        enclave = self._running_selection("terminate")
        if enclave is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes and not self._refuse_read_only("terminate"):
                self._run_action("terminate", lambda: self.source.terminate(enclave.enclave_id), None, "terminate-enclave")

        from console.screens.terminate import ConfirmTerminate

        self.app.push_screen(ConfirmTerminate(enclave), confirmed)

    def action_terminate_all(self) -> None:
        if self._refuse_read_only("terminate-all"):
            return
        count = len(self.snapshot.enclaves) if self.snapshot else 0

        def confirmed(yes: bool | None) -> None:
            if yes and not self._refuse_read_only("terminate-all"):
                self._run_action("terminate-all", self.source.terminate_all, None, "terminate-enclave --all")

        from console.screens.terminate import ConfirmTerminateAll

        self.app.push_screen(ConfirmTerminateAll(count), confirmed)

    def action_test_sign(self) -> None:
        if self._refuse_unavailable("test_sign"):
            return
        enclave = self._running_selection("test-sign")
        if enclave is not None:
            from console.screens.testsign import TestSignDialog

            self.app.push_screen(TestSignDialog(enclave, self.source.schemes))

    def action_pin(self) -> None:
        if self._refuse_read_only("pin"):
            return
        enclave = self._running_selection("pin")
        if enclave is None:
            return
        # the pin's key is the image name of its EIF (core.ops.expected); the enclave name only without one
        eif = self.snapshot.eifs.get(enclave.enclave_id) if self.snapshot else None
        image = enclave.image_name or (eif.image_name if eif else None) or enclave.name
        if enclave.measurements is None or not image:
            self.notify("pin: this enclave reports no image name, name or measurements", severity="warning")
            return
        meas = enclave.measurements
        eif_path = enclave.eif_path

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.start_pin(image, meas, None, eif_path)

        from console.screens.terminate import Confirm

        self.app.push_screen(
            Confirm("Pin expected PCRs?", f"Pin {enclave.label}'s PCRs as the expected measurements of image {image}?\n"
                    "Any earlier pin for that image is replaced.", "Pin"),
            confirmed,
        )

    def action_refresh(self) -> None:
        self.refresh_status()

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        self.notify("refresh paused" if self.paused else "refresh resumed")

    def action_show_pane(self, pane: str) -> None:
        if pane not in PANES:
            return
        self.pane = pane
        for name in PANES:
            self._dash(f"#{name}").set_class(name == pane, "-shown")
        target = self._dash(f"#{pane}")
        if pane == "console":
            self._dash("#console", ConsolePane).log_widget.focus()
        else:
            target.focus()

    def _console_focused(self) -> bool:
        focused = self.focused
        pane = self._dash("#console", ConsolePane)
        return focused is not None and (focused is pane or pane in focused.ancestors)

    def action_filter(self) -> None:
        if self._console_focused():
            self._dash("#console", ConsolePane).open_search()
            return
        box = self._dash("#table-filter", Input)
        box.remove_class("hidden")
        box.value = self.filter_text
        box.focus()

    @on(Input.Changed, "#table-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        if self.snapshot is not None:
            self._render_all()

    @on(Input.Submitted, "#table-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.input.add_class("hidden")
        self._dash("#enclaves", EnclaveTable).focus()

    def on_key(self, event: Any) -> None:
        box = self._dash("#table-filter", Input)
        if event.key == "escape" and box.has_focus:
            event.stop()
            self.action_clear_filter()
            return
        command = commands.MUTATING_KEYS.get(event.key)
        on_top = self._on_top()
        hidden = command is not None and self.check_action(command.action.split("(")[0], ()) is False
        if command is not None and hidden and not isinstance(on_top, Dialog) and not box.has_focus:
            # the key is hidden, not broken: say why nothing happens
            event.stop()
            reason = self.read_only_reason
            why = reason.detail if reason is not None else "nitrodeck runs read-only"
            self.notify(f"read-only mode is on ({why}): {command.label} is not available", severity="warning")
            return
        other = commands.BY_KEY.get(event.key)
        if other is not None and not isinstance(on_top, Dialog) and not box.has_focus \
                and self._refuse_unavailable(other.action.split("(")[0]):
            event.stop()

    def _refuse_unavailable(self, action: str) -> bool:
        """An action this dashboard's source cannot serve (a remote host's test-sign): say why, refuse."""
        why = self.unavailable.get(action)
        if why is None:
            return False
        command = commands.BY_ACTION.get(action)
        self.notify(f"{command.label if command else action}: {why}", severity="warning")
        return True

    def action_clear_filter(self) -> None:
        box = self._dash("#table-filter", Input)
        if not (self.filter_text or box.value or box.display) and self.app.screen_stack[0] is not self:
            self.dismiss()  # nothing to clear: esc leaves a host's dashboard for the fleet
            return
        box.add_class("hidden")
        if self.filter_text or box.value:
            box.value = ""
            self.filter_text = ""
            if self.snapshot is not None:
                self._render_all()
        self._dash("#enclaves", EnclaveTable).focus()

    def action_sort_next(self) -> None:
        shown = list(self._dash("#enclaves", EnclaveTable).columns_shown)
        order: list[str | None] = [None, *shown]
        at = order.index(self.sort_column) if self.sort_column in order else 0
        self.sort_column = order[(at + 1) % len(order)]
        self.sort_reverse = False
        self.notify(f"sorted by {self.sort_column}" if self.sort_column else "unsorted (as describe-enclaves lists them)")
        self._render_all()

    def action_sort_reverse(self) -> None:
        if self.sort_column is None:
            self.sort_column = "Name"
        self.sort_reverse = not self.sort_reverse
        self._render_all()

    def action_cursor(self, where: str) -> None:
        """j/k/g/G: the table's cursor, or the focused pane's scroll position."""
        focused = self.focused
        table = self._dash("#enclaves", EnclaveTable)
        target = table if focused is None or focused is table else focused
        names = {"down": ("cursor_down", "scroll_down"), "up": ("cursor_up", "scroll_up"),
                 "top": ("scroll_top", "scroll_home"), "bottom": ("scroll_bottom", "scroll_end")}[where]
        for name in names:
            action = getattr(target, f"action_{name}", None)
            if action is not None:
                action()
                return

    def action_open_console(self) -> None:
        enclave, exited = self.selected()
        if enclave is None:
            self.notify("open: select an enclave first", severity="warning")
            return
        if not exited and not enclave.debug_mode:
            self.notify(f"{enclave.label} has no console: it does not run in debug mode", severity="warning")
        self.action_show_pane("console")

    def action_yank(self) -> None:
        enclave, _ = self.selected()
        if enclave is None:
            self.notify("yank: select an enclave first", severity="warning")
            return

        def chosen(what: str | None) -> None:
            if what:
                self.yank(enclave, what)

        from console.screens.yank import YankMenu

        self.app.push_screen(YankMenu(enclave), chosen)

    def yank(self, enclave: EnclaveInfo, what: str) -> None:
        """Copy to the clipboard (OSC 52, so it works over SSH) and say what was copied."""
        from console.screens.yank import yank_text

        text, said = yank_text(enclave, what)
        if text is None:
            self.notify(f"yank: {enclave.label} reports no measurements", severity="warning")
            return
        self.app.copy_to_clipboard(text)
        self.notify(f"copied {said} of {enclave.label}")

    def action_audit_log(self) -> None:
        if self._refuse_unavailable("audit_log"):
            return
        from console.screens.audit import AuditScreen

        self.app.push_screen(AuditScreen(self.source.audit_entries(), str(self.source.audit_path())))

    def jump_to(self, enclave_id: str) -> None:
        """Select an enclave's row (the palette's enclave entries); clears a filter that hides it."""
        table = self._dash("#enclaves", EnclaveTable)
        try:
            row = table.get_row_index(enclave_id)
        except Exception:  # noqa: BLE001 - hidden by the filter, or gone
            self.action_clear_filter()
            try:
                row = table.get_row_index(enclave_id)
            except Exception:  # noqa: BLE001 - gone since the palette listed it
                self.notify("that enclave is gone", severity="warning")
                return
        table.move_cursor(row=row, animate=False)
        table.focus()

    def launch_eif(self, path: Path) -> None:
        """The palette's EIF entries: the launch dialog with that EIF chosen."""
        if self._refuse_read_only("launch"):
            return
        from console.screens.launch import LaunchDialog, PoolLimits

        limits = PoolLimits(self.source.free_memory_mib(self.snapshot), self.source.free_cpus(self.snapshot))
        self.app.push_screen(LaunchDialog(self.source.eif_library(), limits, chosen=path))

    def action_toggle_follow(self) -> None:
        pane = self._dash("#console", ConsolePane)
        pane.follow = not pane.follow

    def action_toggle_wrap(self) -> None:
        pane = self._dash("#console", ConsolePane)
        pane.wrap = not pane.wrap

    def action_next_match(self) -> None:
        self._dash("#console", ConsolePane).next_match()

    def action_prev_match(self) -> None:
        self._dash("#console", ConsolePane).next_match(-1)

    def action_save_console(self) -> None:
        pane = self._dash("#console", ConsolePane)
        enclave, _ = self.selected()
        if not pane.raw:
            self.notify("the console buffer is empty", severity="warning")
            return
        try:
            path = pane.save(home.logs_dir(), enclave.enclave_id if enclave else "console", self.source.now())
        except OSError as exc:
            from console.screens.error import ErrorDialog

            self.app.push_screen(ErrorDialog("save failed", NitrodeckError(f"cannot write the log: {exc.strerror or exc}", hint="check the logs folder permissions")))
            return
        self.notify(f"saved {len(pane.raw)} lines to {path}")

    def action_doctor(self) -> None:
        if self._refuse_unavailable("doctor"):
            return
        from console.screens.doctor import DoctorScreen

        self.app.push_screen(DoctorScreen(self.doctor_report))
        self.run_doctor()

    def action_help(self) -> None:
        from console.screens.help import HelpScreen

        self.app.push_screen(HelpScreen(self.read_only, frozenset(self.unavailable), self.help_note()))

    def help_note(self) -> str | None:
        """A line for the top of `?` (a host's dashboard in the fleet says how to go back)."""
        return None

    async def run_command(self, command_id: str) -> bool:
        """Run a registry command by id (the palette and tests come through here)."""
        command = commands.BY_ID[command_id]
        if command.mutating and self._refuse_read_only(command.label):
            return False
        if self._refuse_unavailable(command.action.split("(")[0]):
            return False
        return await self.app.run_action(command.action, self)


#: what tests, benchmarks and scripts read on the app: the dashboard holds it (the app shows one dashboard)
_ON_DASHBOARD = frozenset({
    "source", "snapshot", "selected", "gone", "gone_at", "exited_rows", "doctor_report", "read_only", "paused",
    "read_only_reason", "device_blocked", "pane", "sort_column", "sort_reverse", "filter_text", "refresh_error",
    "run_command", "refresh_status", "request_refresh", "jump_to", "yank", "start_launch", "start_build",
    "start_pin", "start_test_sign", "load_eif_info", "load_docker_images", "run_doctor", "_tick", "_run_action",
    "_command_ran", "_dash", "console_for", "cleared_before", "action_launch",
})


class NitrodeckApp(App[int]):
    """`nitrodeck`: this host's dashboard as the app's only screen (dialogs open over it)."""

    # Textual loads a screen's CSS_PATH when the screen is pushed, not for an app's default screen
    CSS_PATH = Dashboard.CSS_PATH
    TITLE = "nitrodeck"
    COMMANDS = Dashboard.COMMANDS
    COMMAND_PALETTE_BINDING = "ctrl+p"
    # quit and the palette also work over a dialog, as they always have (the dashboard's keys do not)
    BINDINGS = [Binding("q", "quit", "Quit", show=False), Binding("colon", "command_palette", "Palette", show=False)]

    def __init__(
        self, source: Source, refresh_seconds: float = SAFETY_POLL_S, console_max_lines: int = 5000
    ) -> None:
        super().__init__()
        self.dashboard = Dashboard(source, refresh_seconds, console_max_lines)

    def get_default_screen(self) -> Screen[Any]:
        return self.dashboard

    def get_driver_class(self) -> type[Any]:
        driver = super().get_driver_class()
        from textual.drivers.linux_driver import LinuxDriver

        if driver is LinuxDriver:
            from console.driver import QuietLinuxDriver

            return QuietLinuxDriver  # its input thread does not wake ten times a second
        return driver

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.dashboard.check_action(action, parameters)

    def __getattr__(self, name: str) -> Any:
        if name not in _ON_DASHBOARD:
            # Textual's reactives ask hasattr(app, "compute_theme") and the like on every read of the
            # theme (~100 times a frame): fail those without formatting a message
            raise AttributeError(name)
        dashboard = self.__dict__.get("dashboard")
        if dashboard is not None:
            return getattr(dashboard, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _duration(seconds: Any) -> str:
    """0.4s, 12s, 5m, 3h, 2d: short enough for a table cell."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "?"
    value = max(float(seconds), 0.0)
    if value < 10:
        return f"{value:.1f}s"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    if value < 172800:
        return f"{value / 3600:.0f}h"
    return f"{value / 86400:.0f}d"


def live_app(
    backend: str | None = None,
    read_only: bool = False,
    refresh_seconds: float = SAFETY_POLL_S,
    early: EarlySource | None = None,
) -> NitrodeckApp:
    """The TUI on the real lifecycle; its command log receives every command the driver runs.
    ``early``: a source made (and its first describe started) before Textual was imported."""
    early = early or EarlySource(backend, read_only)
    app = NitrodeckApp(early.source, refresh_seconds=refresh_seconds)
    early.relay.target = lambda record: app.dashboard.post_message(CommandRan(record))
    return app


def run_tui(args: argparse.Namespace, early: EarlySource | None = None, frame: FirstFrame | None = None) -> int:
    """`nitrodeck` with no subcommand. ``frame``: the early frame drawn before Textual loaded
    (console/first_frame.py), handed over to Textual or taken down before an error is printed."""
    refresh = float(getattr(args, "refresh", SAFETY_POLL_S) or SAFETY_POLL_S)
    if not math.isfinite(refresh) or not 0.2 <= refresh <= MAX_TIMEOUT_SECONDS:  # nan passes a plain `<`
        if frame is not None:
            frame.abort()
        print(f"nitrodeck: --refresh must be from 0.2 to {MAX_TIMEOUT_SECONDS:g} seconds", file=sys.stderr)
        return 2
    try:
        app = live_app(getattr(args, "backend", None), bool(getattr(args, "read_only", False)), refresh, early)
    except NitrodeckError as err:
        if frame is not None:
            frame.abort()
        print(f"nitrodeck: {safe_text(str(err), multiline=True)}", file=sys.stderr)
        return err.exit_status
    if frame is not None:
        frame.handover()  # Textual's driver saves the terminal's modes as it starts: the user's, not ours
        frame.shown = False  # from here the alternate screen is Textual's, and it leaves it on exit
    app.run()
    message = quit_message(app.dashboard.source.still_running())
    if message:
        print(message, file=sys.stderr)
    return int(app.return_code or 0)


def _age_texts(ages: dict[str, float]) -> dict[str, str]:
    """The Age column's texts by enclave ID: what a tick compares with what is drawn."""
    return {k: age_text(v) for k, v in ages.items()}


def quit_message(still: list[EnclaveInfo]) -> str | None:
    """Emulated enclaves outlive the TUI on purpose (as real ones do): say so, and how to stop them."""
    if not still:
        return None
    names = ", ".join(e.label for e in still[:5]) + (", ..." if len(still) > 5 else "")
    return (f"nitrodeck: {len(still)} enclave{'s' if len(still) != 1 else ''} still running on the emulator "
            f"({names}); stop them with `nitrodeck terminate --all` (or `make stop`)")


__all__ = ["Dashboard", "NitrodeckApp", "ReadOnlyError", "live_app", "run_tui"]
