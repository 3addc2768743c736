"""The enclave table: one row per enclave, filterable, sortable by any column (the header shows the
arrow), keeping the selection across refreshes.

Columns follow the table's width: the long ID column goes first when space runs out (the detail
pane shows the full ID), then long names are shortened, so name, CID, state, flags, CPUs, memory,
PCR0 and the PCR verdict always show, from 80 columns up."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from console.cells import age_text, short_id
from console.widgets import text_key
from core.models import EnclaveInfo
from core.text import safe_text

MATCH_STYLE = {"match": "bold green", "mismatch": "bold red", "unpinned": "dim", "debug": "bold yellow"}
COLUMNS = ("Name", "ID", "CID", "State", "Age", "Flags", "CPUs", "MiB", "PCR0", "PCRs")
#: without the ID (it stays in the detail pane): what every width shows
NARROW_COLUMNS = ("Name", "CID", "State", "Age", "Flags", "CPUs", "MiB", "PCR0", "PCRs")
#: the header's sort arrows (the sorted column's label gets one)
UP, DOWN = " ▲", " ▼"
#: the widest age_text ("23h59m", "99d23h")
AGE_WIDTH = 6
#: names are shortened down to this many cells before anything else gives way
MIN_NAME = 8


def sort_key(column: str, enclave: EnclaveInfo, verdict: str, age: float | None) -> tuple[int, object]:
    """What a column sorts by: numbers as numbers, CPUs by count then IDs, unknowns last."""
    value: object = {
        "Name": (enclave.name or "").lower(),
        "ID": enclave.enclave_id,
        "CID": enclave.cid,
        "State": enclave.state,
        "Age": age,
        "Flags": enclave.flags,
        "CPUs": (len(enclave.cpu_ids), enclave.cpu_ids),
        "MiB": enclave.memory_mib,
        "PCR0": enclave.measurements.pcr0 if enclave.measurements else None,
        "PCRs": verdict,
    }.get(column)
    return (1, "") if value is None else (0, value)


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


def fit(cells: list[dict[str, Text]], width: int, padding: int = 1, sorted_by: str | None = None) -> tuple[tuple[str, ...], int]:
    """The columns to show in ``width`` cells and the longest name allowed (0: no limit)."""
    if width <= 0:
        return COLUMNS, 0

    def need(columns: tuple[str, ...], name_max: int = 0, age: int = 0) -> int:
        total = 0
        for col in columns:
            head = len(col) + (len(UP) if col == sorted_by else 0)
            widest = max([head, age if col == "Age" else 0] + [row[col].cell_len for row in cells])
            if col == "Name" and name_max:
                widest = max(len(col), min(widest, name_max))
            total += widest + 2 * padding
        return total

    # the ID column is decided with the Age column as wide as an age gets ("59m59s"): a ticking age
    # never moves the ID column in or out
    if need(COLUMNS, age=AGE_WIDTH) <= width:
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
        self._labels: tuple[str, ...] = ()
        self._last: tuple[list[EnclaveInfo], dict[str, str], list[EnclaveInfo], str] | None = None
        self._extra: dict[str, object] = {}
        #: what the rows show now (row key, cells in column order): a refresh that changes only some
        #: cells (the ages, every poll) updates those cells instead of rebuilding the table
        self._shown: list[tuple[str, list[Text]]] = []

    def _set_columns(self, columns: tuple[str, ...], sort: tuple[str | None, bool]) -> None:
        labels = tuple(c + ((DOWN if sort[1] else UP) if c == sort[0] else "") for c in columns)
        if columns == self._columns and labels == self._labels:
            return
        self.clear(columns=True)
        for col, label in zip(columns, labels, strict=True):
            self.add_column(label, key=col)
        self._columns = columns
        self._labels = labels

    def _update_cells(self, columns: tuple[str, ...], sort: tuple[str | None, bool],
                      shown: list[tuple[str, list[Text]]]) -> bool:
        """Update just the cells that changed, when the rows, their order and the columns are the same
        and no cell got shorter (a full rebuild fits the columns' widths again); False otherwise."""
        labels = tuple(c + ((DOWN if sort[1] else UP) if c == sort[0] else "") for c in columns)
        old = self._shown
        if (columns, labels) != (self._columns, self._labels) or [k for k, _ in old] != [k for k, _ in shown]:
            return False
        changed: list[tuple[str, str, Text]] = []
        for (key, before), (_, after) in zip(old, shown, strict=True):
            for col, was, now in zip(columns, before, after, strict=True):
                if text_key(was) != text_key(now):
                    if now.cell_len < was.cell_len:
                        return False
                    changed.append((key, col, now))
        for key, col, now in changed:
            self.update_cell(key, col, now, update_width=True)
        self._shown = shown
        return True

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

    def show_ages(self, ages: dict[str, float]) -> None:
        """The rows shown again with new ages (only changed cells are redrawn)."""
        if self._last is not None:
            self.show(*self._last, **{**self._extra, "ages": ages})  # type: ignore[arg-type]

    def on_resize(self) -> None:
        if self._last is not None:
            self.show(*self._last, **self._extra)  # type: ignore[arg-type]

    def show(
        self,
        enclaves: list[EnclaveInfo],
        matches: dict[str, str],
        gone: list[EnclaveInfo],
        needle: str,
        *,
        ages: dict[str, float] | None = None,
        sort: tuple[str | None, bool] = (None, False),
        exit_notes: dict[str, str] | None = None,
    ) -> None:
        """Running enclaves, then ``gone`` (in the order given: newest exit first), dimmed as EXITED.

        ``exit_notes`` is each exited row's state text ("EXITED 0.4s, 12s ago"); ``matches`` may hold
        exited rows' verdicts too (judged against the pin of their EIF)."""
        self._last = (enclaves, matches, gone, needle)
        self._extra = {"ages": ages, "sort": sort, "exit_notes": exit_notes}
        ages = ages or {}
        notes = exit_notes or {}
        keep = self.selected_id
        rows: list[tuple[str, dict[str, Text]]] = []
        column, reverse = sort
        listed = [(e, False) for e in enclaves] + [(e, True) for e in gone]
        if column is not None:
            def key(item: tuple[EnclaveInfo, bool]) -> tuple[int, object]:
                e, exited = item
                verdict = "exited" if exited else matches.get(e.enclave_id, "unpinned")
                return sort_key(column, e, verdict, ages.get(e.enclave_id))
            # exited enclaves stay below the running ones, each part sorted on its own
            listed = sorted([i for i in listed if not i[1]], key=key, reverse=reverse) + \
                sorted([i for i in listed if i[1]], key=key, reverse=reverse)
        for enclave, exited in listed:
            if not row_matches(enclave, needle):
                continue
            verdict = matches.get(enclave.enclave_id, "exited" if exited else "unpinned")
            pcr0 = enclave.measurements.pcr0[:8] if enclave.measurements else "-"
            dim = "dim" if exited else ""
            state = notes.get(enclave.enclave_id, "EXITED") if exited else enclave.state
            rows.append((enclave.enclave_id, {
                "Name": Text(safe_text(enclave.name or "-"), style=dim),
                "ID": Text(short_id(enclave.enclave_id), style=dim),
                "CID": Text(str(enclave.cid), style=dim),
                "State": Text(state, style=dim or ("green" if enclave.state == "RUNNING" else "yellow")),
                "Age": Text("-" if exited else age_text(ages.get(enclave.enclave_id)), style=dim),
                "Flags": Text("DEBUG" if enclave.debug_mode else "-", style="bold yellow" if enclave.debug_mode else dim),
                "CPUs": Text(cpu_list(enclave.cpu_ids), style=dim),
                "MiB": Text(str(enclave.memory_mib), style=dim),
                "PCR0": Text(pcr0, style=dim),
                "PCRs": Text(verdict.upper() if verdict in ("match", "mismatch") else verdict,
                             style="dim" if exited else MATCH_STYLE.get(verdict, "dim")),
            }))
        # leave room for a vertical scrollbar when the rows will not fit
        width = self.scrollable_content_region.width if self.size.width else 0
        columns, name_max = fit([cells for _, cells in rows], width, self.cell_padding, column)
        shown: list[tuple[str, list[Text]]] = []
        for key, cells in rows:
            if name_max and cells["Name"].cell_len > name_max:
                cells["Name"].truncate(name_max, overflow="ellipsis")
            shown.append((key, [cells[c] for c in columns]))
        if self._update_cells(columns, sort, shown):
            return
        self._set_columns(columns, sort)
        self.clear()
        for key, values in shown:
            self.add_row(*values, key=key)
        self._shown = shown
        if keep is not None:
            try:
                self.move_cursor(row=self.get_row_index(keep), animate=False)
            except Exception:  # noqa: BLE001 - the kept row was filtered out or is gone
                pass
