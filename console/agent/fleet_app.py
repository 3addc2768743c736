"""`nitrodeck fleet`'s TUI: one row per parent, refreshed in a thread worker; read-only by construction
(it only GETs agents). Enter on a host shows its enclaves below the table (the host's /status)."""

from __future__ import annotations

from collections.abc import Callable

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from console.agent.fleet import HEADERS, HostReport, row

ENCLAVE_HEADERS = ["NAME", "ID", "STATE", "CPUS", "MEMORY", "PCRS"]


class FleetApp(App[int]):
    TITLE = "nitrodeck fleet"
    CSS = """
    #hosts { height: 1fr; }
    #detail-title { height: 1; background: $boost; padding: 0 1; }
    #enclaves { height: 1fr; }
    """
    BINDINGS = [
        Binding("r", "refresh", "Refresh"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, poll: Callable[[], list[HostReport]], every: float) -> None:
        super().__init__()
        self.poll = poll
        self.every = every
        self.reports: list[HostReport] = []
        self.selected: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="hosts", cursor_type="row", zebra_stripes=True)
        yield Static("Enter on a host shows its enclaves", id="detail-title")
        yield DataTable(id="enclaves", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#hosts", DataTable).add_columns(*HEADERS)
        self.query_one("#enclaves", DataTable).add_columns(*ENCLAVE_HEADERS)
        self.sub_title = "read-only · asking the agents…"
        self.action_refresh()
        self.set_interval(self.every, self.action_refresh)

    def action_refresh(self) -> None:
        self._poll()

    @work(thread=True, exclusive=True, group="fleet", exit_on_error=False)
    def _poll(self) -> None:
        reports = self.poll()
        self.call_from_thread(self._show, reports)

    def _show(self, reports: list[HostReport]) -> None:
        self.reports = reports
        table = self.query_one("#hosts", DataTable)
        cursor = table.cursor_row
        table.clear()
        for report in reports:
            table.add_row(*row(report), key=report.name)
        if reports:
            table.move_cursor(row=min(cursor, len(reports) - 1))
        down = sum(1 for r in reports if not r.reachable)
        self.sub_title = f"read-only · {len(reports)} hosts" + (f" · {down} unreachable" if down else "")
        self._show_detail()

    @on(DataTable.RowSelected, "#hosts")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.selected = str(event.row_key.value) if event.row_key is not None else None
        self._show_detail()

    def _show_detail(self) -> None:
        report = next((r for r in self.reports if r.name == self.selected), None)
        table = self.query_one("#enclaves", DataTable)
        table.clear()
        title = self.query_one("#detail-title", Static)
        if report is None:
            return
        if not report.reachable:
            title.update(f"{report.name}: unreachable ({report.error})")
            return
        count = len(report.enclaves)
        title.update(f"{report.name} ({report.instance_id}): {count} enclave{'' if count == 1 else 's'}")
        for e in report.enclaves:
            table.add_row(e.get("EnclaveName") or "-", e.get("EnclaveID", ""), e.get("State", ""),
                          str(e.get("NumberOfCPUs", "")), f"{e.get('MemoryMiB', '')} MiB",
                          e.get("ExpectedPCRs") or "-")


def run_fleet_tui(poll: Callable[[], list[HostReport]], every: float) -> int:
    return FleetApp(poll, every).run() or 0
