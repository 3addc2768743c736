"""The one-line header: instance, backend badge (EMULATOR is unmissable), failing doctor checks, read-only
and why, last refresh."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.widgets import Static

from console.widgets import show_text


class StatusHeader(Static):
    def show(
        self,
        *,
        instance_id: str | None,
        backend_name: str,
        is_emulator: bool,
        read_only: bool,
        taken_at: str | None,
        paused: bool,
        error: str | None = None,
        doctor: str | None = None,
        read_only_label: str | None = None,
    ) -> None:
        text = Text()
        text.append(" nitrodeck ", style="bold reverse")
        text.append(f" {instance_id or 'instance ?'} ")
        if is_emulator:
            text.append(" EMULATOR ", style="bold black on yellow")
        else:
            text.append(f" {backend_name} ", style="bold black on green")
        if doctor:
            # a host that cannot run enclaves is the first thing to know
            text.append(" ")
            text.append(f" DOCTOR: {doctor} ", style="bold white on red")
        if read_only:
            text.append(" ")
            text.append(" READ-ONLY ", style="bold white on blue")
            if read_only_label:  # why: --read-only, $NITRODECK_READ_ONLY, no device, device not writable
                text.append(f" {read_only_label}", style="bold blue")
        if paused:
            text.append(" ")
            text.append(" PAUSED ", style="bold black on magenta")
        when = "never"
        if taken_at:
            try:
                when = datetime.fromisoformat(taken_at).strftime("%H:%M:%S UTC")
            except ValueError:
                when = taken_at[:32]
        text.append(f"  refreshed {when}", style="dim")
        if error:
            text.append(f"  ! {error}", style="bold red")
        show_text(self, text, fixed_height=True)  # one line: no layout, and no repaint when unchanged
