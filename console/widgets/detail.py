"""The detail pane: everything about the selected enclave, PCRs expected vs actual first.

PCR values are shown in full (96 hex digits for SHA-384), cut into chunks that fit the pane's
width, so an operator can read and compare every digit at 80 columns as well as at 200.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.text import Text
from textual import events
from textual.containers import VerticalScroll
from textual.widgets import Static

from console.widgets import show_text
from core.models import EifInfo, EnclaveInfo
from core.text import safe_text

DEBUG_WARNING = (
    "DEBUG MODE: this enclave's attestation documents carry all-zero PCRs. The values below are "
    "the EIF's build measurements; a verifier sees zeros and must not trust this enclave."
)
#: indent of the hex lines under a PCR label
HEX_INDENT = 2


def hex_width(width: int) -> int:
    """How many hex digits per line fit a pane ``width`` cells wide (a whole PCR, half, a third, a quarter)."""
    for chunk in (96, 48, 32, 24):
        if HEX_INDENT + chunk <= width:
            return chunk
    return 16


def _hex_lines(text: Text, value: str, chunk: int, style: str = "") -> None:
    for i in range(0, len(value), chunk):
        text.append(" " * HEX_INDENT)
        text.append(value[i : i + chunk] + "\n", style=style)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested metadata as (dotted key, value) rows; lists of strings joined with spaces (a Cmd reads as typed)."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key in sorted(value):
            rows.extend(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [(prefix, " ".join(value) if value else "[]")]
    return [(prefix, value if isinstance(value, str) else json.dumps(value))]


def _metadata(text: Text, title: str, meta: dict[str, Any]) -> None:
    text.append(f"{title}\n", style="bold")
    for key, value in _flatten(meta):
        text.append(f"  {safe_text(key)} ", style="dim")
        text.append(safe_text((value or '""')[:200]) + "\n")


def _events(text: Text, events: list[Any]) -> None:
    """The journal's events of this enclave, oldest first (core/ops/journal.py)."""
    text.append("events\n", style="bold")
    for event in events:
        text.append(f"  {event.time[11:23]} ", style="dim")
        text.append(f"{event.event:<13}")
        extra = event.extra
        note = ""
        if event.event == "exited":
            note = f"after {extra.get('uptime_s')} s"
            if extra.get("exit_status") is not None:
                note += f", status {extra['exit_status']}"
        elif event.event == "launch-failed":
            note = f"{extra.get('code')}: {extra.get('message')}"
        elif event.event in ("pinned", "pcr-mismatch"):
            note = f"pin {extra.get('pin')}"
        elif event.event == "restarted":
            note = f"restart {extra.get('restarts')}"
        text.append(f" {note}"[:200] + "\n", style="dim")


def render_detail(
    enclave: EnclaveInfo | None,
    verdict: str,
    expected: dict[int, str] | None,
    exited: bool = False,
    eif: EifInfo | None = None,
    width: int = 80,
    pin: str | None = None,
    events: list[Any] | None = None,
    exit_note: str | None = None,
    read_only: bool = False,
    launch_blocked: bool = False,
    eif_note: str | None = None,
    started: datetime | None = None,
) -> Text:
    """``read_only``: every change is refused (its keys are hidden, so no hint names them);
    ``launch_blocked``: only launch and terminate are (a device reason), so building still is."""
    text = Text()
    if enclave is None:
        text.append("No enclave selected.\n", style="dim")
        if read_only:
            text.append("read-only: nothing to show until an enclave runs.", style="dim")
        elif launch_blocked:
            text.append("Launching is refused here (see the header); EIFs can still be built with `b`.", style="dim")
        else:
            text.append("Launch one with `l` (or build an EIF first with `b`).", style="dim")
        return text
    chunk = hex_width(width)
    text.append(f"{safe_text(enclave.label)}  ", style="bold")
    text.append(f"{enclave.enclave_id}\n", style="dim")
    if exited:
        text.append(f"{exit_note or 'EXITED'}", style="bold")
        text.append("  (kept console in the console pane)\n", style="dim")
        text.append(f"flags {enclave.flags}  CID {enclave.cid}\n")
    else:
        text.append(f"state {enclave.state}  flags {enclave.flags}  CID {enclave.cid}  PID {enclave.process_id}\n")
        if started is not None:
            # to the second here: the table's Age column is in whole minutes (it redraws once a minute)
            text.append(f"started {started.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC\n", style="dim")
    text.append(f"CPUs {','.join(map(str, enclave.cpu_ids)) or '-'} ({enclave.cpu_count})  memory {enclave.memory_mib} MiB\n")
    if enclave.debug_mode:
        text.append(DEBUG_WARNING, style="bold black on yellow")
        text.append("\n")
    text.append("PCRs ", style="bold")
    style = {"match": "bold green", "mismatch": "bold red", "debug": "bold yellow"}.get(verdict, "dim")
    label = {
        "match": "MATCH expected",
        "mismatch": "MISMATCH: not the pinned image",
        "debug": "debug mode (attests zeros)",
        "unpinned": "no expected PCRs pinned for its EIF" + ("" if exited or read_only else " (P pins these)"),
        "exited": "enclave exited",
    }.get(verdict, verdict)
    text.append(label, style=style)
    if pin:
        text.append(f"  pin {pin}", style="dim")
    text.append("\n")
    actual = enclave.measurements.pcrs() if enclave.measurements else {}
    wanted = dict(expected) if expected else {}
    if not actual:
        text.append("(no measurements reported)\n", style="dim")
    for index in sorted(set(actual) | set(wanted)):
        have = actual.get(index)
        want = wanted.get(index)
        text.append(f"PCR{index:<2} ", style="bold")
        if want is not None and have is not None and want == have:
            text.append("ok", style="bold green")
            text.append("  actual = expected\n", style="dim")
            _hex_lines(text, have, chunk)
            continue
        if want is not None and have is not None:
            text.append("!!", style="bold red")
            text.append("  actual\n", style="dim")
            _hex_lines(text, have, chunk, "red")
        elif have is not None:
            text.append("    actual (nothing pinned)\n", style="dim")
            _hex_lines(text, have, chunk)
        else:
            text.append("--  actual: not reported\n", style="dim")
        if want is not None:
            text.append("        expected\n", style="dim")
            _hex_lines(text, want, chunk, "green")
    if enclave.image_name or enclave.image_version:
        text.append("image ", style="bold")
        text.append(safe_text(f"{enclave.image_name or '?'} {enclave.image_version or ''}") + "\n")
    if enclave.eif_path:
        text.append("EIF ", style="bold")
        text.append(f"{safe_text(enclave.eif_path)}\n")
    if eif is not None:
        signed = "signed" if eif.is_signed else "unsigned"
        if eif.is_signed and eif.signature_check is False:
            signed = "signature INVALID"
        text.append("EIF ", style="bold")
        image = safe_text(f"{eif.image_name or '?'} {eif.image_version or ''}")
        text.append(f"v{eif.version} {image}  {signed}  CRC {'ok' if eif.check_crc else 'BAD'}\n")
    elif eif_note:  # e.g. a remote host: its EIF files are not readable from here
        text.append("EIF ", style="bold")
        text.append(f"{eif_note}\n", style="dim")
    # describe-enclaves --metadata reports the metadata of the EIF the enclave was launched from;
    # describe-eif reports the file's now. One block when they agree, both when the file changed.
    launched = enclave.metadata or None
    on_disk = eif.metadata if eif is not None and eif.metadata else None
    if launched and on_disk and launched != on_disk:
        _metadata(text, "metadata at launch", launched)
        _metadata(text, "metadata of the EIF file now (it changed since launch)", on_disk)
    elif launched or on_disk:
        _metadata(text, "metadata", launched or on_disk or {})
    if events:
        _events(text, events)
    text.rstrip()
    return text


class DetailPane(VerticalScroll):
    def __init__(self, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._shown: tuple[Any, ...] = (None, "unpinned", None, False, None, None, None, None, None)
        #: what the operator may do here (the app's read-only state): hints name only keys that work
        self.read_only = False
        self.launch_blocked = False

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static(render_detail(None, "unpinned", None), id="detail-body")

    def _width(self) -> int:
        # the vertical scrollbar may come and go: leave room for it
        return max(self.scrollable_content_region.width - self.styles.scrollbar_size_vertical, 16) if self.size.width else 80

    def show(
        self,
        enclave: EnclaveInfo | None,
        verdict: str,
        expected: dict[int, str] | None,
        exited: bool = False,
        eif: EifInfo | None = None,
        pin: str | None = None,
        events: list[Any] | None = None,
        exit_note: str | None = None,
        eif_note: str | None = None,
        started: datetime | None = None,
    ) -> None:
        before = self._shown[0] if getattr(self, "_shown", None) else None
        self._shown = (enclave, verdict, expected, exited, eif, pin, events, exit_note, eif_note, started)
        show_text(self.query_one("#detail-body", Static), render_detail(
            enclave, verdict, expected, exited, eif, self._width(), pin, events, exit_note,
            self.read_only, self.launch_blocked, eif_note, started))
        if (before.enclave_id if before else None) != (enclave.enclave_id if enclave else None):
            # another enclave: start at its name, not at the old one's scroll position
            self.scroll_home(animate=False)

    def set_mode(self, read_only: bool, launch_blocked: bool) -> None:
        """The app's read-only state changed (or is first known): render the same enclave again."""
        if (read_only, launch_blocked) != (self.read_only, self.launch_blocked):
            self.read_only, self.launch_blocked = read_only, launch_blocked
            self.show(*self._shown)

    def on_resize(self, event: events.Resize) -> None:
        self.show(*self._shown)
