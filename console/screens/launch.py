"""The launch dialog: an EIF from the library with its describe-eif details, checked against the pool."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static

from console.screens.base import Dialog
from console.screens.host import DialogHost, dialog_host
from console.screens.source import parse_cpu_ids
from console.widgets.toggles import GlyphCheckbox
from core.errors import NitrodeckError, UsageError
from core.models import EifInfo, LaunchRequest, RunInfo
from core.text import safe_text

MIN_MEMORY_MIB = 64
MAX_CID = 2**32 - 2


@dataclass(frozen=True)
class PoolLimits:
    """What the launch is checked against; None means unknown (the tool will decide)."""

    free_memory_mib: int | None
    free_cpus: list[int] | None


def min_memory_mib(eif_size: int) -> int:
    """nitro-cli refuses less than 4x the EIF file size (E26)."""
    return max(MIN_MEMORY_MIB, math.ceil(4 * eif_size / (1024 * 1024)))


def validate_launch(
    *,
    eif: Path | None,
    eif_size: int | None,
    cpus: str,
    memory: str,
    cid: str,
    debug: bool,
    name: str,
    limits: PoolLimits,
) -> LaunchRequest:
    if eif is None:
        raise UsageError("pick an EIF from the library", where="eif", hint="build one first with `b`")
    try:
        memory_mib = int(memory.strip())
    except ValueError:
        raise UsageError(f"memory must be a whole number of MiB, not {memory.strip()[:20]!r}", where="memory") from None
    if eif_size is not None and memory_mib < min_memory_mib(eif_size):
        raise UsageError(
            f"{memory_mib} MiB is less than 4x the EIF size ({min_memory_mib(eif_size)} MiB needed)",
            where="memory",
            hint=f"give at least {min_memory_mib(eif_size)} MiB",
        )
    if memory_mib < MIN_MEMORY_MIB:
        raise UsageError(f"an enclave needs at least {MIN_MEMORY_MIB} MiB", where="memory")
    if limits.free_memory_mib is not None and memory_mib > limits.free_memory_mib:
        raise UsageError(
            f"{memory_mib} MiB is more than the {limits.free_memory_mib} MiB of free hugepage memory",
            where="memory",
            hint="lower the memory, terminate an enclave, or raise memory_mib in allocator.yaml",
        )
    cpu_text = cpus.strip() or "2"
    cpu_count: int | None = None
    cpu_ids: list[int] | None = None
    if cpu_text.isdigit():
        cpu_count = int(cpu_text)
        if cpu_count < 1:
            raise UsageError("an enclave needs at least one CPU", where="cpus")
        if limits.free_cpus is not None and cpu_count > len(limits.free_cpus):
            raise UsageError(
                f"{cpu_count} CPUs requested but only {len(limits.free_cpus)} are free in the pool",
                where="cpus",
                hint="lower the count, terminate an enclave, or grow the pool in allocator.yaml",
            )
    else:
        cpu_ids = parse_cpu_ids(cpu_text)
        if limits.free_cpus is not None:
            taken = [c for c in cpu_ids if c not in limits.free_cpus]
            if taken:
                raise UsageError(
                    f"CPU(s) {','.join(map(str, taken))} are not free in the pool",
                    where="cpus",
                    hint=f"free: {','.join(map(str, limits.free_cpus)) or 'none'}",
                )
    cid_value: int | None = None
    if cid.strip():
        try:
            cid_value = int(cid.strip())
        except ValueError:
            raise UsageError(f"CID must be a number, not {cid.strip()[:20]!r}", where="cid") from None
        if not 4 <= cid_value <= MAX_CID:
            raise UsageError(f"CID {cid_value} is reserved or out of range", where="cid", hint="use 4 or more, or leave empty")
    return LaunchRequest(
        eif_path=str(eif),
        memory_mib=memory_mib,
        cpu_count=cpu_count,
        cpu_ids=cpu_ids,
        cid=cid_value,
        debug_mode=debug,
        name=name.strip() or None,
    )


def eif_text(path: Path, info: EifInfo | None, size: int | None) -> Text:
    text = Text()
    if info is None:
        text.append(f"{safe_text(path.name)}: reading describe-eif...", style="dim")
        return text
    text.append(safe_text(f"{info.image_name or path.stem} {info.image_version or ''}"), style="bold")
    text.append(f"  EIF v{info.version}  {'signed' if info.is_signed else 'unsigned'}  CRC {'ok' if info.check_crc else 'BAD'}\n")
    if size is not None:
        text.append(f"{size / (1024 * 1024):.1f} MiB on disk, needs >= {min_memory_mib(size)} MiB memory\n")
    for index, value in info.measurements.pcrs().items():
        text.append(f"PCR{index} ", style="bold")
        text.append(f"{value[:48]}...\n" if len(value) > 48 else f"{value}\n")
    return text


class LaunchDialog(Dialog[None]):
    #: required fields and the debug-mode switch first, CID and name last, the EIF's details after them:
    #: every field is visible at 80x24
    LAST_FIELD = "name"

    def __init__(self, eifs: list[Path], limits: PoolLimits, chosen: Path | None = None) -> None:
        super().__init__()
        self.eifs = eifs
        self.limits = limits
        #: the EIF picked before the dialog opened (the palette's "launch <eif>")
        self.chosen = chosen if chosen in eifs else (eifs[0] if eifs else None)
        self.info: dict[Path, EifInfo] = {}
        self.sizes: dict[Path, int] = {}

    @property
    def host(self) -> DialogHost:
        return dialog_host(self)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog launch-dialog"):
            yield Static("Launch an enclave", classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield Select[str](compact=True, options=
                    [(p.name, str(p)) for p in self.eifs],
                    prompt="no EIFs in the library: build one first" if not self.eifs else "pick an EIF",
                    value=str(self.chosen) if self.chosen else Select.NULL,
                    id="eif",
                )
                free_mem = "?" if self.limits.free_memory_mib is None else str(self.limits.free_memory_mib)
                free_cpus = "?" if self.limits.free_cpus is None else (",".join(map(str, self.limits.free_cpus)) or "none")
                yield Static(f"free: {free_mem} MiB hugepage memory, CPUs {free_cpus}", id="pool", classes="dialog-hint")
                with Horizontal(classes="field"):
                    yield Label("CPUs ", classes="field-label")
                    yield Input(compact=True, value="2", placeholder="count (2) or IDs (2,3)", id="cpus")
                with Horizontal(classes="field"):
                    yield Label("memory ", classes="field-label")
                    yield Input(compact=True, value="", placeholder="MiB", id="memory")
                yield GlyphCheckbox("debug mode (console readable; attests all-zero PCRs)", id="debug")
                with Horizontal(classes="field"):
                    yield Label("CID ", classes="field-label")
                    yield Input(compact=True, placeholder="auto", id="cid")
                with Horizontal(classes="field"):
                    yield Label("name ", classes="field-label")
                    yield Input(compact=True, placeholder="enclave name (default: from the EIF)", id="name")
                yield Static("", id="dialog-error", classes="hidden")
                # the chosen EIF's details below the fields: every field, the name too, fits at 80x24
                yield Static("", id="eif-info")
            with Horizontal(classes="dialog-buttons"):
                yield Button(compact=True, label="Launch", id="launch", variant="primary", disabled=not self.eifs)
                yield Button(compact=True, label="Close", id="close")

    def on_mount(self) -> None:
        self.query_one("#eif", Select).focus()
        if self.chosen:
            self._selected(self.chosen)

    @property
    def eif(self) -> Path | None:
        value = self.query_one("#eif", Select).value
        return Path(value) if isinstance(value, str) else None

    @on(Select.Changed, "#eif")
    def _eif_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self._selected(Path(event.value))

    def _selected(self, path: Path) -> None:
        self.query_one("#eif-info", Static).update(eif_text(path, self.info.get(path), self.sizes.get(path)))
        info = self.info.get(path)
        # the name follows the chosen EIF (its image name once described, else nitro-cli's default:
        # the file name without .eif) until the operator types one
        self.derive("name", (info.image_name if info and info.image_name else None) or path.name.removesuffix(".eif"))
        if info is None:
            self.host.load_eif_info(path, self)

    def eif_described(self, path: Path, info: EifInfo, size: int) -> None:
        self.info[path] = info
        self.sizes[path] = size
        if path == self.eif:
            self.query_one("#eif-info", Static).update(eif_text(path, info, size))
            # memory follows the EIF too (4x its size, at least 512) until typed
            self.derive("memory", str(max(min_memory_mib(size), 512 if min_memory_mib(size) <= 512 else 0)))
            if info.image_name:
                self.derive("name", info.image_name)

    def start(self) -> None:
        self.clear_error()
        eif = self.eif
        try:
            req = validate_launch(
                eif=eif,
                eif_size=self.sizes.get(eif) if eif else None,
                cpus=self.query_one("#cpus", Input).value,
                memory=self.query_one("#memory", Input).value,
                cid=self.query_one("#cid", Input).value,
                debug=self.query_one("#debug", GlyphCheckbox).value,
                name=self.query_one("#name", Input).value,
                limits=self.limits,
            )
        except NitrodeckError as err:
            self.show_error(err)
            return
        self.query_one("#launch", Button).disabled = True
        self.host.start_launch(req, self)

    def action_done(self, kind: str, result: Any) -> None:
        if isinstance(result, RunInfo):
            self.dismiss(None)

    def show_error(self, err: BaseException) -> None:
        self.query_one("#launch", Button).disabled = not self.eifs
        super().show_error(err)

    def submit(self) -> None:
        self.start()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "launch":
            self.start()
        else:
            self.dismiss(None)
