"""The dashboard's first frame, drawn with plain escape codes before Textual is imported.

Python plus Textual's imports take about half a second of CPU on a small parent instance, and an
operator who opens the dashboard because something is wrong wants the enclaves on screen first. The
first describe-enclaves already runs in a thread while the TUI loads (``EarlySource``); when it is
back in time, this module draws its enclaves in the alternate screen, laid out like the dashboard's
table, and Textual paints over it once it has loaded. Keys typed meanwhile are not echoed over the
frame and reach the dashboard when it starts.

Nothing here imports Textual or Rich: this runs before they are loaded.
"""

from __future__ import annotations

import contextlib
import os
import sys
import termios
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from console.cells import age_text, short_id
from core.text import safe_text

#: how long to wait for the first describe before giving up on the early frame (Textual's own first
#: frame then comes as it always did)
WAIT_S = 0.4
ENTER, LEAVE = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J", "\x1b[?25h\x1b[?1049l"
BOLD, DIM, REVERSE, RESET = "\x1b[1m", "\x1b[2m", "\x1b[7m", "\x1b[0m"
COLUMNS = ("Name", "ID", "CID", "State", "Age", "Flags", "CPUs", "MiB", "PCR0", "PCRs")
#: the dashboard's title says "(N running)"; this one is worded apart, so that whoever waits for the
#: dashboard itself (tests, scripts driving tmux) does not take the early frame for it
TITLE = "Enclaves: {n} running (loading the dashboard...)"


def rows_of(snap: Any, now: datetime) -> list[dict[str, str]]:
    """The table's cells for a core-made Snapshot (console.screens.source.Snapshot)."""
    rows = []
    for e in snap.enclaves:
        started = snap.started.get(e.enclave_id)
        age = (now - started).total_seconds() if started is not None else None
        pcr0 = e.measurements.pcr0 if e.measurements else None
        verdict = safe_text(snap.matches.get(e.enclave_id, "-"))
        rows.append({
            "Name": safe_text(e.name or "-"),
            "ID": safe_text(short_id(e.enclave_id)),
            "CID": str(e.cid),
            "State": safe_text(e.state),
            "Age": age_text(age),
            "Flags": "DEBUG" if e.debug_mode else "-",
            "CPUs": ",".join(str(c) for c in e.cpu_ids) or "-",
            "MiB": str(e.memory_mib),
            "PCR0": safe_text(pcr0[:8]) if pcr0 else "-",
            "PCRs": verdict.upper() if verdict in ("match", "mismatch") else verdict,
        })
    return rows


def render(snap: Any, width: int, height: int, now: datetime | None = None) -> str:
    """The frame as text with escape codes: the header line, the table's title, its head and rows
    (as many as fit), cut to ``width`` cells; the ID column goes first when the width is short, then
    long names are shortened, as in the dashboard."""
    now = now or datetime.now(UTC)
    rows = rows_of(snap, now)
    columns = list(COLUMNS)

    def widths(cols: list[str], name_max: int = 0) -> dict[str, int]:
        out = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in cols}
        if name_max:
            out["Name"] = max(len("Name"), min(out["Name"], name_max))
        return out

    def total(w: dict[str, int]) -> int:
        return sum(w.values()) + 2 * len(w)

    w = widths(columns)
    if total(w) > width:
        columns.remove("ID")
        w = widths(columns)
    if total(w) > width:
        w = widths(columns, max(8, w["Name"] - (total(w) - width)))

    def cell(col: str, text: str) -> str:
        if len(text) > w[col]:
            text = text[: w[col] - 1] + "…"
        return " " + text.ljust(w[col]) + " "

    status = snap.status
    badge = "EMULATOR" if status.backend == "emulator" else safe_text(status.backend_display)
    lines = [
        f"{REVERSE}{BOLD} nitrodeck {RESET} {safe_text(status.instance_id or 'instance ?')}  {BOLD}{badge}{RESET}"
        + (f"  {BOLD}READ-ONLY{RESET}" if status.read_only else "") + f"  {DIM}starting{RESET}",
        f" {BOLD}{TITLE.format(n=len(rows))}{RESET}",
        BOLD + "".join(cell(c, c) for c in columns)[:width] + RESET,
    ]
    for row in rows[: max(0, height - len(lines) - 1)]:
        lines.append("".join(cell(c, row[c]) for c in columns)[:width])
    # each line placed by its row: no reliance on the terminal's newline translation
    return "".join(f"\x1b[{row};1H{line}" for row, line in enumerate(lines, start=1))


class FirstFrame:
    """The early frame on the terminal: :meth:`handover` just before Textual's driver starts (it saves
    the terminal's modes, so ours must be the user's again by then), :meth:`abort` when the TUI will
    not start (leave the alternate screen, so an error printed next is seen)."""

    def __init__(self, out: TextIO, fd: int, modes: list[Any] | None) -> None:
        self.out = out
        self.fd = fd
        self.modes = modes
        self.shown = True

    def _restore_modes(self) -> None:
        if self.modes is not None:
            with contextlib.suppress(termios.error, OSError):
                # TCSANOW, not TCSAFLUSH: keys typed over the frame stay queued for the dashboard
                termios.tcsetattr(self.fd, termios.TCSANOW, self.modes)
            self.modes = None

    def handover(self) -> None:
        self._restore_modes()

    def abort(self) -> None:
        self._restore_modes()
        if self.shown:
            with contextlib.suppress(OSError, ValueError):
                self.out.write(LEAVE)
                self.out.flush()
            self.shown = False


def draw(ready: Callable[[float], Any | None], out: TextIO | None = None, wait_s: float = WAIT_S) -> FirstFrame | None:
    """Draw the first frame if the first snapshot comes within ``wait_s``; None when it did not (or
    there is no terminal, or TERM is dumb). ``ready(timeout)`` returns the snapshot or None."""
    out = out or sys.stdout
    if os.environ.get("TERM", "") in ("", "dumb") or os.environ.get("NITRODECK_NO_FIRST_FRAME"):
        return None
    try:
        fd = out.fileno()
        if not (os.isatty(fd) and sys.stdin.isatty()):
            return None
        size = os.get_terminal_size(fd)
    except (OSError, ValueError):
        return None
    with contextlib.suppress(ValueError):
        # how long a slow machine may wait for the frame (tests set it, so that the frame is always drawn)
        wait_s = float(os.environ.get("NITRODECK_FIRST_FRAME_WAIT", wait_s))
    if not 0 <= wait_s <= 60:  # nan and negatives included
        wait_s = WAIT_S
    deadline = time.monotonic() + wait_s
    snap = ready(max(0.0, deadline - time.monotonic()))
    if snap is None:
        return None
    modes = None
    with contextlib.suppress(termios.error, OSError):
        stdin = sys.stdin.fileno()
        modes = termios.tcgetattr(stdin)
        quiet = termios.tcgetattr(stdin)
        quiet[3] &= ~(termios.ECHO | termios.ICANON)  # lflag: keys typed now are not drawn over the frame
        termios.tcsetattr(stdin, termios.TCSANOW, quiet)
    frame = FirstFrame(out, sys.stdin.fileno(), modes)
    try:
        out.write(ENTER + render(snap, size.columns, size.lines))
        out.flush()
    except OSError:
        frame.abort()
        return None
    return frame


__all__ = ["FirstFrame", "draw", "render"]
