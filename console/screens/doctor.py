"""`d`: the doctor's checks on a screen of their own: status, what was found, and the fix for each problem."""

from __future__ import annotations

from datetime import datetime

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from console.screens.base import Dialog
from core.ops.doctor import FAIL, OK, WARN, DoctorReport

MARKS = {OK: ("ok", "green"), WARN: ("warn", "bold yellow"), FAIL: ("FAIL", "bold white on red")}


def summary(report: DoctorReport) -> str:
    fails, warns = len(report.failing), len(report.warnings)
    parts = [f"{fails} failing" if fails else "nothing failing"]
    if warns:
        parts.append(f"{warns} warning{'s' if warns > 1 else ''}")
    return ", ".join(parts)


def doctor_table(report: DoctorReport) -> Table:
    table = Table(box=None, expand=True, pad_edge=False, show_header=True, header_style="bold")
    table.add_column("", no_wrap=True, width=4)
    table.add_column("check", no_wrap=True)
    table.add_column("found / fix", ratio=1)
    # problems first: at 80x24 the failing check must be on screen without scrolling
    order = {FAIL: 0, WARN: 1, OK: 2}
    for check in sorted(report.checks, key=lambda c: order.get(c.status, 3)):
        word, style = MARKS.get(check.status, (check.status, ""))
        body = Text(check.found)
        if check.fix:
            body.append("\nfix: ", style="bold")
            body.append(check.fix, style="cyan")
        table.add_row(Text(word, style=style), check.title, body)
    return table


class DoctorScreen(Dialog[None]):
    BINDINGS = [Binding("r", "rerun", "Run again", id="doctor-rerun")]

    def __init__(self, report: DoctorReport | None) -> None:
        super().__init__()
        self.report = report

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog doctor-dialog"):
            yield Static(self._title(), classes="dialog-title", id="doctor-title")
            with VerticalScroll():
                yield Static(self._body(), id="doctor-body")
            yield Static("esc closes  -  r runs the checks again  -  CLI: nitrodeck doctor", classes="dialog-hint")

    def _title(self) -> str:
        if self.report is None:
            return "Doctor: running the checks..."
        try:
            when = datetime.fromisoformat(self.report.taken_at).strftime("%H:%M:%S UTC")
        except ValueError:
            when = self.report.taken_at[:32]
        return f"Doctor ({self.report.backend}): {summary(self.report)}  -  checked {when}"

    def _body(self) -> Table | str:
        return doctor_table(self.report) if self.report is not None else ""

    def on_mount(self) -> None:
        # a report that arrived between compose() and now (the doctor runs in a worker) is shown here
        self._show()

    def show_report(self, report: DoctorReport) -> None:
        self.report = report
        if self.is_mounted:
            self._show()  # before that, compose() or on_mount() shows it

    def _show(self) -> None:
        self.query_one("#doctor-title", Static).update(self._title())
        self.query_one("#doctor-body", Static).update(self._body())

    def action_rerun(self) -> None:
        below = self.app.screen_stack[:-1] if self.app.screen is self else self.app.screen_stack
        run = next((s.run_doctor for s in reversed(below) if hasattr(s, "run_doctor")), None)
        if run is not None:
            run()
