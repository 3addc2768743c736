"""`nitrodeck fleet`'s TUI: one row per parent, refreshed in a thread worker; read-only by construction
(it only GETs agents). The highlighted host's enclaves show below the table; Enter (or `o`) opens that
host's full dashboard (console/app.py's :class:`~console.app.Dashboard`), read through its agent
(console/agent/remote.py), read-only; q or esc comes back to the table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from console.agent.fleet import HEADERS, HostReport, row
from console.agent.remote import REMOTE_REFRESH_S
from console.app import Dashboard
from console.screens.source import Source
from core.errors import NitrodeckError
from core.text import safe_text

ENCLAVE_HEADERS = ["NAME", "ID", "STATE", "CPUS", "MEMORY", "PCRS"]
HINT = "Enter (or o) opens the highlighted host's dashboard"


class HostDashboard(Dashboard):
    """A remote host's dashboard over the fleet's table: the same screen as on the host, read-only,
    fed by the host's agent. q and esc (with no filter to clear) go back to the fleet."""

    BINDINGS = [Binding("q", "quit", "Fleet", id="quit", tooltip="Back to the fleet's host table")]

    def help_note(self) -> str | None:
        name = getattr(getattr(self.source, "entry", None), "name", "this host")
        return f"{safe_text(name)}, read through its agent (read-only). q or esc: back to the fleet"


class FleetApp(App[int]):
    TITLE = "nitrodeck fleet"
    CSS = """
    #hosts { height: 1fr; }
    #host-title { height: 1; background: $boost; padding: 0 1; }
    #host-enclaves { height: 1fr; }
    """
    BINDINGS = [
        Binding("o", "open", "Open"),
        Binding("r", "refresh", "Refresh"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, poll: Callable[[], list[HostReport]], every: float,
                 opener: Callable[[str], Source] | None = None, open_at_start: str | None = None,
                 dashboard_refresh: float = REMOTE_REFRESH_S) -> None:
        super().__init__()
        self.poll = poll
        self.every = every
        #: a host's name -> the Source of its dashboard (console.agent.remote.RemoteSource)
        self.opener = opener
        #: `nitrodeck fleet --open NAME`: that host's dashboard first, the table behind it
        self.open_at_start = open_at_start
        #: how often an open dashboard asks its agent again (its event stream wakes it sooner)
        self.dashboard_refresh = dashboard_refresh
        self.reports: list[HostReport] = []
        self.selected: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="hosts", cursor_type="row", zebra_stripes=True)
        yield Static(HINT, id="host-title")
        yield DataTable(id="host-enclaves", cursor_type="row")
        yield Footer()

    def _fleet(self, selector: str, expect: type[Any]) -> Any:
        """A widget of the host table's screen, even while a host's dashboard is on top."""
        return self.screen_stack[0].query_one(selector, expect)

    def on_mount(self) -> None:
        self._fleet("#hosts", DataTable).add_columns(*HEADERS)
        self._fleet("#host-enclaves", DataTable).add_columns(*ENCLAVE_HEADERS)
        self.sub_title = "read-only · asking the agents…"
        self.action_refresh()
        self.set_interval(self.every, self.action_refresh)
        if self.open_at_start:
            # after the host table's first refresh: pushed during mount, the dashboard's table showed
            # its columns at their headers' widths in a real terminal ("RUNNI", "MATC")
            name = self.open_at_start
            self.call_after_refresh(self.open_host, name, True)

    def action_refresh(self) -> None:
        self._poll()

    @work(thread=True, exclusive=True, group="fleet", exit_on_error=False)
    def _poll(self) -> None:
        reports = self.poll()
        self.call_from_thread(self._show, reports)

    def _show(self, reports: list[HostReport]) -> None:
        self.reports = reports
        table = self._fleet("#hosts", DataTable)
        cursor = table.cursor_row
        table.clear()
        for report in reports:
            table.add_row(*row(report), key=report.name)
        if reports:
            table.move_cursor(row=min(cursor, len(reports) - 1))
        down = sum(1 for r in reports if not r.reachable)
        self.sub_title = f"read-only · {len(reports)} hosts" + (f" · {down} unreachable" if down else "")
        self._show_detail()

    @on(DataTable.RowHighlighted, "#hosts")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.selected = str(event.row_key.value) if event.row_key is not None else None
        self._show_detail()

    @on(DataTable.RowSelected, "#hosts")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.selected = str(event.row_key.value) if event.row_key is not None else None
        self.action_open()

    def action_open(self) -> None:
        if self.selected is None:
            self.notify("no host highlighted", severity="warning")
            return
        self.open_host(self.selected)

    def open_host(self, name: str, even_unreachable: bool = False) -> None:
        """Push ``name``'s dashboard. An unreachable host says why instead (r asks again); ``--open`` opens
        it anyway, and its dashboard shows the error until the agent answers."""
        report = next((r for r in self.reports if r.name == name), None)
        if report is not None and not report.reachable and not even_unreachable:
            self.notify(f"{safe_text(name)} is unreachable: {safe_text(report.error or 'no answer')}. Its dashboard "
                        "is read through its agent; r asks every host again.", title="cannot open",
                        severity="error", timeout=10, markup=False)
            return
        if self.opener is None:
            self.notify("this fleet view cannot open dashboards", severity="warning")
            return
        try:
            source = self.opener(name)
        except NitrodeckError as err:
            self.notify(f"{safe_text(name)}: {err.message}" + (f" ({err.hint})" if err.hint else ""),
                        title="cannot open", severity="error", timeout=10, markup=False)
            return
        self.push_screen(HostDashboard(source, refresh_seconds=self.dashboard_refresh))

    def _show_detail(self) -> None:
        report = next((r for r in self.reports if r.name == self.selected), None)
        table = self._fleet("#host-enclaves", DataTable)
        table.clear()
        title = self._fleet("#host-title", Static)
        if report is None:
            title.update(HINT)
            return
        if not report.reachable:
            title.update(Text(f"{report.name}: unreachable ({report.error})"))
            return
        count = len(report.enclaves)
        title.update(Text(f"{report.name} ({report.instance_id}): {count} enclave{'' if count == 1 else 's'}"
                          "  ·  Enter opens its dashboard"))
        for e in report.enclaves:
            table.add_row(e.get("EnclaveName") or "-", e.get("EnclaveID", ""), e.get("State", ""),
                          str(e.get("NumberOfCPUs", "")), f"{e.get('MemoryMiB', '')} MiB",
                          e.get("ExpectedPCRs") or "-")


def run_fleet_tui(poll: Callable[[], list[HostReport]], every: float,
                  opener: Callable[[str], Source] | None = None, open_at_start: str | None = None) -> int:
    return FleetApp(poll, every, opener, open_at_start).run() or 0
