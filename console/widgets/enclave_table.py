"""The enclave table: one row per enclave, filterable, keeping the selection across refreshes.

Columns follow the table's width: the long ID column goes first when space runs out (the detail
pane shows the full ID), then long names are shortened, so name, CID, state, flags, CPUs, memory,
PCR0 and the PCR verdict always show, from 80 columns up."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from core.models import EnclaveInfo

MATCH_STYLE = {"match": "bold green", "mismatch": "bold red", "unpinned": "dim", "debug": "bold yellow"}
COLUMNS = ("Name", "ID", "CID", "State", "Flags", "CPUs", "MiB", "PCR0", "PCRs")
#: without the ID (it stays in the detail pane): what every width shows
NARROW_COLUMNS = ("Name", "CID", "State", "Flags", "CPUs", "MiB", "PCR0", "PCRs")
#: names are shortened down to this many cells before anything else gives way
MIN_NAME = 8


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


def fit(cells: list[dict[str, Text]], width: int, padding: int = 1) -> tuple[tuple[str, ...], int]:
    """The columns to show in ``width`` cells and the longest name allowed (0: no limit)."""
    if width <= 0:
        return COLUMNS, 0

    def need(columns: tuple[str, ...], name_max: int = 0) -> int:
        total = 0
        for col in columns:
            widest = max([len(col)] + [row[col].cell_len for row in cells])
            if col == "Name" and name_max:
                widest = max(len(col), min(widest, name_max))
            total += widest + 2 * padding
        return total

    if need(COLUMNS) <= width:
        return COLUMNS, 0
    over = need(NARROW_COLUMNS) - width
    if over <= 0:
        return NARROW_COLUMNS, 0
    longest = max([len("Name")] + [row["Name"].cell_len for row in cells])
    return NARROW_COLUMNS, max(MIN_NAME, longest - over)


class EnclaveTable(DataTable[Text | str]):
    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self._columns: tuple[str, ...] = ()
        self._last: tuple[list[EnclaveInfo], dict[str, str], list[EnclaveInfo], str] | None = None

    def _set_columns(self, columns: tuple[str, ...]) -> None:
        if columns == self._columns:
            return
        self.clear(columns=True)
        for col in columns:
            self.add_column(col, key=col)
        self._columns = columns

    @property
    def columns_shown(self) -> tuple[str, ...]:
        return self._columns

    @property
    def selected_id(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:  # noqa: BLE001 - cursor outside the table after a shrink
            return None
        return str(key.value) if key.value is not None else None

    def on_resize(self) -> None:
        if self._last is not None:
            self.show(*self._last)

    def show(self, enclaves: list[EnclaveInfo], matches: dict[str, str], gone: list[EnclaveInfo], needle: str) -> None:
        self._last = (enclaves, matches, gone, needle)
        keep = self.selected_id
        rows: list[tuple[str, dict[str, Text]]] = []
        for enclave, exited in [(e, False) for e in enclaves] + [(e, True) for e in gone]:
            if not row_matches(enclave, needle):
                continue
            verdict = "exited" if exited else matches.get(enclave.enclave_id, "unpinned")
            pcr0 = enclave.measurements.pcr0[:8] if enclave.measurements else "-"
            dim = "dim" if exited else ""
            rows.append((enclave.enclave_id, {
                "Name": Text(enclave.name or "-", style=dim),
                "ID": Text(short_id(enclave.enclave_id), style=dim),
                "CID": Text(str(enclave.cid), style=dim),
                "State": Text("EXITED" if exited else enclave.state, style=dim or ("green" if enclave.state == "RUNNING" else "yellow")),
                "Flags": Text("DEBUG" if enclave.debug_mode else "-", style="bold yellow" if enclave.debug_mode else dim),
                "CPUs": Text(cpu_list(enclave.cpu_ids), style=dim),
                "MiB": Text(str(enclave.memory_mib), style=dim),
                "PCR0": Text(pcr0, style=dim),
                "PCRs": Text(verdict.upper() if verdict in ("match", "mismatch") else verdict, style=MATCH_STYLE.get(verdict, "dim")),
            }))
        # leave room for a vertical scrollbar when the rows will not fit
        width = self.scrollable_content_region.width if self.size.width else 0
        columns, name_max = fit([cells for _, cells in rows], width, self.cell_padding)
        self._set_columns(columns)
        self.clear()
        for key, cells in rows:
            if name_max and cells["Name"].cell_len > name_max:
                cells["Name"].truncate(name_max, overflow="ellipsis")
            self.add_row(*(cells[c] for c in columns), key=key)
        if keep is not None:
            try:
                self.move_cursor(row=self.get_row_index(keep), animate=False)
            except Exception:  # noqa: BLE001 - the kept row was filtered out or is gone
                pass
