"""The enclave table: one row per enclave, filterable, keeping the selection across refreshes."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from core.models import EnclaveInfo

MATCH_STYLE = {"match": "bold green", "mismatch": "bold red", "unpinned": "dim", "debug": "bold yellow"}
COLUMNS = ("Name", "ID", "CID", "State", "Flags", "CPUs", "MiB", "PCR0", "PCRs")
#: at 80 columns the ID and PCR0 live in the detail pane only
NARROW_COLUMNS = ("Name", "CID", "State", "Flags", "CPUs", "MiB", "PCRs")


def short_id(enclave_id: str) -> str:
    return "…" + enclave_id[-8:] if len(enclave_id) > 9 else enclave_id


def cpu_list(ids: list[int]) -> str:
    return ",".join(str(c) for c in ids) or "-"


def row_matches(enclave: EnclaveInfo, needle: str) -> bool:
    if not needle:
        return True
    hay = " ".join(
        str(v)
        for v in (enclave.name, enclave.enclave_id, enclave.cid, enclave.state, enclave.flags, enclave.image_name)
        if v is not None
    ).lower()
    return needle.lower() in hay


class EnclaveTable(DataTable[Text | str]):
    narrow = False

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self._columns_for(self.narrow)

    def _columns_for(self, narrow: bool) -> None:
        self.clear(columns=True)
        for col in NARROW_COLUMNS if narrow else COLUMNS:
            self.add_column(col, key=col)
        self._shown_narrow = narrow

    @property
    def selected_id(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:  # noqa: BLE001 - cursor outside the table after a shrink
            return None
        return str(key.value) if key.value is not None else None

    def show(self, enclaves: list[EnclaveInfo], matches: dict[str, str], gone: list[EnclaveInfo], needle: str) -> None:
        keep = self.selected_id
        if getattr(self, "_shown_narrow", None) != self.narrow:
            self._columns_for(self.narrow)
        self.clear()
        rows = [(e, False) for e in enclaves] + [(e, True) for e in gone]
        for enclave, exited in rows:
            if not row_matches(enclave, needle):
                continue
            verdict = "exited" if exited else matches.get(enclave.enclave_id, "unpinned")
            pcr0 = enclave.measurements.pcr0[:8] if enclave.measurements else "-"
            dim = "dim" if exited else ""
            cells = {
                "Name": Text((enclave.name or "-")[:20], style=dim),
                "ID": Text(short_id(enclave.enclave_id), style=dim),
                "CID": Text(str(enclave.cid), style=dim),
                "State": Text("EXITED" if exited else enclave.state, style=dim or ("green" if enclave.state == "RUNNING" else "yellow")),
                "Flags": Text("DEBUG" if enclave.debug_mode else "-", style="bold yellow" if enclave.debug_mode else dim),
                "CPUs": Text(cpu_list(enclave.cpu_ids), style=dim),
                "MiB": Text(str(enclave.memory_mib), style=dim),
                "PCR0": Text(pcr0, style=dim),
                "PCRs": Text(verdict.upper() if verdict in ("match", "mismatch") else verdict, style=MATCH_STYLE.get(verdict, "dim")),
            }
            self.add_row(*(cells[c] for c in (NARROW_COLUMNS if self.narrow else COLUMNS)), key=enclave.enclave_id)
        if keep is not None:
            try:
                self.move_cursor(row=self.get_row_index(keep), animate=False)
            except Exception:  # noqa: BLE001 - the kept row was filtered out or is gone
                pass
