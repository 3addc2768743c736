"""`A`: the audit log (every mutating action: when, who, what, result) in a scrollable viewer."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from console.screens.base import Dialog

#: the newest entries shown (AuditLog.entries bounds what is read)
MAX_SHOWN = 500


def audit_table(entries: list[dict[str, Any]]) -> Table:
    table = Table(box=None, expand=True, pad_edge=False, header_style="bold")
    table.add_column("time", no_wrap=True, style="dim")
    table.add_column("user", no_wrap=True)
    table.add_column("action", no_wrap=True, style="bold")
    table.add_column("result", no_wrap=True)
    table.add_column("command", ratio=1, overflow="fold")
    for entry in entries[-MAX_SHOWN:]:
        ok = entry.get("result") == "ok"
        result = Text(" ok " if ok else f" {entry.get('code') or 'error'} ",
                      style="bold black on green" if ok else "bold white on red")
        argv = entry.get("argv") or []
        table.add_row(str(entry.get("time", ""))[:19].replace("T", " "), str(entry.get("user", "")),
                      str(entry.get("action", "")), result, " ".join(str(a) for a in argv))
    return table


class AuditScreen(Dialog[None]):
    def __init__(self, entries: list[dict[str, Any]], path: str) -> None:
        super().__init__()
        self.entries = entries
        self.path = path

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog audit-dialog"):
            yield Static(f"Audit log  {self.path}  ({len(self.entries)} entries)", classes="dialog-title")
            with VerticalScroll(id="audit-scroll"):
                if self.entries:
                    yield Static(audit_table(self.entries), id="audit-body")
                else:
                    yield Static("nothing audited yet: no mutating action has run", id="audit-body")
            yield Static("esc closes  -  newest at the bottom", classes="dialog-hint")

    def on_mount(self) -> None:
        scroll = self.query_one("#audit-scroll", VerticalScroll)
        scroll.focus()
        self.call_after_refresh(scroll.scroll_end, animate=False)
