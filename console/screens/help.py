"""`?`: every key and command, generated from the one registry (so it cannot drift from the keys)."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from console.commands import help_rows
from console.screens.base import Dialog


def help_table(read_only: bool, hidden: frozenset[str] = frozenset()) -> Table:
    table = Table(box=None, expand=True, pad_edge=False, show_header=True, header_style="bold")
    table.add_column("key", no_wrap=True, style="bold cyan")
    table.add_column("command", no_wrap=True)
    table.add_column("what it does", ratio=1)
    last = None
    for group, key, label, description in help_rows(read_only, hidden):
        if group != last:
            table.add_row("", f"[b]{group}[/b]", "")
            last = group
        table.add_row(key, label, description)
    return table


class HelpScreen(Dialog[None]):
    def __init__(self, read_only: bool, hidden: frozenset[str] = frozenset(), note: str | None = None) -> None:
        super().__init__()
        self.read_only = read_only
        #: action names the dashboard's source cannot serve (left out, like read-only's)
        self.hidden = hidden
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help-dialog"):
            title = "Keys" + ("  (read-only: mutating commands hidden)" if self.read_only else "")
            yield Static(title + (f"\n{self.note}" if self.note else ""), classes="dialog-title")
            with VerticalScroll():
                yield Static(help_table(self.read_only, self.hidden), id="help-body")
            yield Static("esc closes  -  : opens the palette  -  tab moves between panes", classes="dialog-hint")
