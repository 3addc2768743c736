"""The command log: every nitro-cli (or nitro-emu) command nitrodeck ran, with its outcome.

Columns are fixed-width (result, duration, exit status, command) so they line up. A failure that
repeats the previous line exactly (same command, same error, e.g. a refresh failing every tick)
is counted on that line (``x5``) instead of filling the log.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import RichLog

MAX_RECORDS = 500


def render_record(record: Any, count: int = 1) -> Table:
    """One line per command: result, duration, exit status, command. A command longer than the pane
    wraps inside its own column, so every line's columns still line up."""
    ok = bool(getattr(record, "ok", False))
    code = getattr(record, "exit_code", None)
    duration = float(getattr(record, "duration", 0.0) or 0.0)
    command = Text(str(getattr(record, "command", record)))
    err = getattr(record, "error_code", None)
    if err:
        command.append(f"  [{err}]", style="red")
    if count > 1:
        command.append(f"  x{count}", style="bold")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True, style="dim")
    grid.add_column(overflow="fold")
    grid.add_row(
        Text(" ok   " if ok else " FAIL ", style="bold black on green" if ok else "bold white on red"),
        f"{duration:6.2f}s exit {'-' if code is None else code:>3}",
        command,
    )
    return grid


def _same_failure(a: Any, b: Any) -> bool:
    return (not getattr(a, "ok", True) and not getattr(b, "ok", True)
            and getattr(a, "command", None) == getattr(b, "command", None)
            and getattr(a, "error_code", None) == getattr(b, "error_code", None))


class CommandLog(RichLog):
    """Bounded; newest at the bottom."""

    def __init__(self, id: str | None = None, classes: str | None = None) -> None:
        # min_width: RichLog renders at least 78 cells wide, wider than the pane at 80 columns
        super().__init__(max_lines=MAX_RECORDS, wrap=True, markup=False, highlight=False, min_width=20, id=id,
                         classes=classes)
        #: one record per line, and how many times in a row it happened
        self.records: list[Any] = []
        self.counts: list[int] = []

    def add(self, record: Any) -> None:
        if self.records and _same_failure(self.records[-1], record):
            self.counts[-1] += 1
            # RichLog cannot rewrite its last line: redraw the (bounded) log, which is rare (failures only)
            self.clear()
            for rec, count in zip(self.records, self.counts, strict=True):
                self.write(render_record(rec, count), expand=True)
            return
        self.records.append(record)
        self.counts.append(1)
        del self.records[:-MAX_RECORDS]
        del self.counts[:-MAX_RECORDS]
        self.write(render_record(record), expand=True)
