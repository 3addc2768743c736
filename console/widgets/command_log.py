"""The command log: every nitro-cli (or nitro-emu) command nitrodeck ran, with its outcome."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import RichLog


def render_record(record: Any) -> Text:
    text = Text()
    ok = bool(getattr(record, "ok", False))
    text.append(" ok " if ok else " FAIL ", style="bold black on green" if ok else "bold white on red")
    code = getattr(record, "exit_code", None)
    duration = float(getattr(record, "duration", 0.0) or 0.0)
    text.append(f" {duration:6.2f}s exit {code if code is not None else '-'} ", style="dim")
    text.append(str(getattr(record, "command", record)))
    err = getattr(record, "error_code", None)
    if err:
        text.append(f"  [{err}]", style="red")
    return text


class CommandLog(RichLog):
    """Bounded; newest at the bottom."""

    def __init__(self, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(max_lines=500, wrap=True, markup=False, highlight=False, id=id, classes=classes)
        self.records: list[Any] = []

    def add(self, record: Any) -> None:
        self.records.append(record)
        del self.records[:-500]
        self.write(render_record(record))
