"""k9s / lazydocker habits in the TUI, on the frozen world (and the live emulator where it matters):
the palette from every pane with enclave jumps and EIF launches, sorting, j/k/g/G, Enter, the filter
in the table's title, yank to the clipboard, console search counts, resets on selection change,
dialog Enter and derived fields, read-only notifications, the command log, the audit viewer."""

from __future__ import annotations

from datetime import UTC, timedelta
from pathlib import Path

from rich.console import Console
from rich.text import Text
from textual.command import CommandPalette
from textual.widgets import Input, RadioButton

from console.app import NitrodeckApp, quit_message
from console.cells import age_text
from console.screens.audit import AuditScreen
from console.screens.base import Dialog
from console.screens.build import BuildDialog
from console.screens.frozen import AUDIT, LEGACY, PAYMENTS, SHELL, FrozenSource
from console.screens.launch import LaunchDialog
from console.screens.source import LiveSource
from console.screens.yank import YankMenu
from console.screenshots import wait_until
from console.widgets.command_log import CommandLog, render_record
from console.widgets.console_pane import ConsolePane
from console.widgets.detail import DetailPane
from console.widgets.enclave_table import COLUMNS, EnclaveTable, fit
from console.widgets.resources import percent_bars
from console.widgets.toggles import GlyphCheckbox, GlyphRadioButton
from core.backends.driver import CommandRecord
from tests.test_tui_readonly import world_with_one_enclave


def frozen_app(read_only: bool = False) -> NitrodeckApp:
    return NitrodeckApp(FrozenSource(read_only=read_only), refresh_seconds=0)


def names(table: EnclaveTable) -> list[str]:
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


def notes(app: NitrodeckApp) -> list[str]:
    return [n.message for n in app._notifications]


async def test_palette_opens_everywhere_and_jumps_to_an_enclave(nd_home: Path) -> None:
    app = frozen_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        for pane in ("1", "2", "3", "4"):
            await pilot.press(pane)
            for key in ("ctrl+p", "colon"):
                await pilot.press(key)
                await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
                await pilot.press("escape")
                await wait_until(pilot, lambda: not isinstance(app.screen, CommandPalette))
        # the palette lists the enclaves: choosing one selects its row
        table = app.query_one("#enclaves", EnclaveTable)
        assert table.selected_id == PAYMENTS.enclave_id
        await pilot.press("colon", *"legacy-kms")
        palette = app.screen
        assert isinstance(palette, CommandPalette)
        await wait_until(pilot, lambda: palette._list_visible and palette.query_one("CommandList").option_count > 0)
        await pilot.press("enter")
        await wait_until(pilot, lambda: table.selected_id == LEGACY.enclave_id)
        assert table.has_focus


async def test_palette_launches_an_eif_from_the_library(nd_home: Path) -> None:
    app = frozen_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        await pilot.press("ctrl+p", *"launch payments.eif")
        palette = app.screen
        assert isinstance(palette, CommandPalette)
        await wait_until(pilot, lambda: palette._list_visible and palette.query_one("CommandList").option_count > 0)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, LaunchDialog))
        dialog = app.screen
        assert isinstance(dialog, LaunchDialog) and dialog.eif is not None and dialog.eif.name == "payments.eif"


async def test_sort_cycles_columns_and_reverses_with_the_arrow(nd_home: Path) -> None:
    app = frozen_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        table = app.query_one("#enclaves", EnclaveTable)
        assert names(table) == ["payments", "nitrodeck-payload", "legacy-kms"]  # describe-enclaves' order
        await pilot.press("o")
        assert app.sort_column == "Name" and names(table) == ["legacy-kms", "nitrodeck-payload", "payments"]
        assert str(table.columns["Name"].label) == "Name ▲"
        await pilot.press("O")
        assert names(table) == ["payments", "nitrodeck-payload", "legacy-kms"]
        assert str(table.columns["Name"].label) == "Name ▼"
        # on to the next columns: ID, CID, State, Age (oldest first when reversed)
        await pilot.press("o", "o", "o", "o")
        assert app.sort_column == "Age" and str(table.columns["Age"].label) == "Age ▲"
        assert names(table) == ["nitrodeck-payload", "legacy-kms", "payments"]  # 1m19s, 1d2h, 3d4h
        await pilot.press("O")
        assert names(table) == ["payments", "legacy-kms", "nitrodeck-payload"]
        # the selection stays on its enclave while rows move
        table.move_cursor(row=table.get_row_index(SHELL.enclave_id))
        await pilot.press("O")
        assert table.selected_id == SHELL.enclave_id
        # Age is the 5th of the columns; after the last one, back to describe-enclaves' order
        for _ in range(len(table.columns_shown) - 4):
            await pilot.press("o")
        assert app.sort_column is None and all("▲" not in str(c.label) for c in table.columns.values())


async def test_vim_keys_enter_and_the_filter_title(nd_home: Path) -> None:
    app = frozen_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        table = app.query_one("#enclaves", EnclaveTable)
        await pilot.press("j")
        assert table.cursor_row == 1
        await pilot.press("G")
        assert table.cursor_row == 2
        await pilot.press("k")
        assert table.cursor_row == 1
        await pilot.press("g")
        assert table.cursor_row == 0
        # Enter opens the selected enclave's console (at 80 columns: the console pane, focused)
        await pilot.press("j", "enter")
        assert app.pane == "console" and app.query_one("#console").display
        assert app.query_one("#console", ConsolePane).log_widget.has_focus
        # j/k in the console scroll it instead
        await wait_until(pilot, lambda: len(app.query_one("#console", ConsolePane).raw) > 0)
        assert table.cursor_row == 1
        await pilot.press("k", "g")
        assert table.cursor_row == 1
        # a kept filter is in the table's title, with how much it shows
        table.focus()
        await pilot.press("slash", *"pay", "enter")
        assert table.row_count == 2 and table.has_focus
        assert "filter: pay  2 of 3" in str(table.border_title)
        await pilot.press("escape")
        assert table.row_count == 3 and "filter" not in str(table.border_title)


async def test_yank_copies_id_pcr0_and_all_pcrs(nd_home: Path) -> None:
    app = frozen_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        assert PAYMENTS.measurements is not None
        await pilot.press("y")
        assert isinstance(app.screen, YankMenu)
        await pilot.press("i")
        assert app.clipboard == PAYMENTS.enclave_id
        assert any("copied the enclave ID" in n for n in notes(app))
        await pilot.press("y", "0")
        assert app.clipboard == PAYMENTS.measurements.pcr0 and any("copied PCR0 of payments" in n for n in notes(app))
        await pilot.press("y", "a")
        lines = app.clipboard.splitlines()
        assert lines == [f"PCR{n}={v}" for n, v in sorted(PAYMENTS.measurements.pcrs().items())]
        assert lines[0].startswith("PCR0=") and len(lines[0]) == len("PCR0=") + 96
        # Enter on the highlighted entry copies it too
        await pilot.press("y", "down", "enter")
        assert app.clipboard == PAYMENTS.measurements.pcr0


async def test_selection_change_resets_search_wrap_and_detail_scroll(nd_home: Path) -> None:
    app = frozen_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        await pilot.press("down")
        pane = app.query_one("#console", ConsolePane)
        await wait_until(pilot, lambda: len(pane.raw) > 5 and not pane.inbox)
        pane.search("nitrodeck-enclave")
        pane.wrap = True
        assert pane.term and pane._matches
        detail = app.query_one("#detail", DetailPane)
        detail.scroll_end(animate=False)
        await pilot.pause()
        assert detail.scroll_y > 0
        await pilot.press("up")
        await wait_until(pilot, lambda: detail.scroll_y == 0)
        assert not pane.term and not pane.wrap and not pane._matches
        assert "match" not in str(pane.query_one("#console-title").render())


async def test_read_only_hidden_key_says_why(nd_home: Path) -> None:
    app = frozen_app(read_only=True)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        await pilot.press("l")
        assert not isinstance(app.screen, LaunchDialog)
        assert any("read-only mode is on (read-only: the --read-only flag was given): Launch" in n for n in notes(app))
        # the palette offers no EIF to launch either
        await pilot.press("colon", *"launch")
        palette = app.screen
        assert isinstance(palette, CommandPalette)
        await pilot.pause(0.5)
        assert palette.query_one("CommandList").option_count == 0


def shown_at_once(dialog: Dialog, *selectors: str) -> list[str]:
    """The selectors whose widget lies wholly inside the dialog body's visible area (no scrolling)."""
    body = dialog.query_one(".dialog-body").region
    return [s for s in selectors if dialog.query_one(s).region.height and body.contains_region(dialog.query_one(s).region)]


async def test_build_dialog_at_80x24_shows_required_fields_and_follows_the_source(nd_home: Path) -> None:
    app = frozen_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        await pilot.press("b")
        build = app.screen
        assert isinstance(build, BuildDialog)
        await pilot.pause()
        for source, fields in (("rootfs", ("#rootfs", "#output")), ("uri", ("#uri", "#output")),
                               ("payload", ("#output",))):
            build.query_one(f"#src-{source}", RadioButton).value = True
            await pilot.pause()
            assert shown_at_once(build, "#source", *fields) == ["#source", *fields]
            # the chosen source is marked with a glyph, the others blank (not only a colour)
            glyphs = {b.id: b.BUTTON_INNER for b in build.query(GlyphRadioButton)}
            assert glyphs.pop(f"src-{source}") == "\u25cf" and set(glyphs.values()) == {" "}
        # name and output follow the source until the name is typed
        build.query_one("#src-rootfs", RadioButton).value = True
        await pilot.pause()
        build.query_one("#rootfs", Input).value = "/srv/images/wallet"
        await pilot.pause()
        name, output = build.query_one("#name", Input), build.query_one("#output", Input)
        assert name.value == "wallet" and output.value.endswith("/wallet.eif")
        name.focus()
        await pilot.press("end", "2")
        build.query_one("#rootfs", Input).value = "/srv/images/other"
        await pilot.pause()
        assert name.value == "wallet2"


async def test_launch_dialog_enter_derived_name_and_error_clearing(nd_home: Path) -> None:
    app = frozen_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        await pilot.press("l")
        dialog = app.screen
        assert isinstance(dialog, LaunchDialog)
        await wait_until(pilot, lambda: bool(dialog.info))
        # every field (the required ones, the debug switch, CID and name), without scrolling
        required = ("#eif", "#cpus", "#memory", "#debug", "#cid", "#name")
        assert shown_at_once(dialog, *required) == list(required)
        name = dialog.query_one("#name", Input)
        assert name.value == "nitrodeck-payload"  # follows the chosen EIF
        # the debug switch shows its state as a glyph, not only a colour
        debug = dialog.query_one("#debug", GlyphCheckbox)
        assert debug.BUTTON_INNER == " "
        debug.value = True
        assert debug.BUTTON_INNER == "X"
        # Enter moves on from a field that is not the last; it does not launch
        cpus = dialog.query_one("#cpus", Input)
        cpus.focus()
        await pilot.press("enter")
        assert dialog.query_one("#memory", Input).has_focus and app.screen is dialog and not app.source.mutations  # type: ignore[attr-defined]
        # a validation message clears as soon as its field changes
        dialog.query_one("#memory", Input).value = "8192"
        await pilot.pause()
        dialog.start()
        await pilot.pause()
        box = dialog.query_one("#dialog-error")
        assert not box.has_class("hidden")
        await pilot.press("backspace")
        await pilot.pause()
        assert box.has_class("hidden")
        # once typed, the name stops following the EIF
        name.focus()
        await pilot.press("x")
        dialog.query_one("#eif").value = str(app.source.eif_library()[1])
        await wait_until(pilot, lambda: len(dialog.info) == 2)
        assert name.value == "x"  # focusing selected the derived name; the typed one stays


async def test_command_log_skips_console_and_collapses_repeats(nd_home: Path) -> None:
    app = frozen_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        log = app.query_one("#commands", CommandLog)
        before = len(log.records)
        app._command_ran(type("M", (), {"record": CommandRecord("nitro-emu console --enclave-id i-x", [], 0, 3.0, True)})())
        assert len(log.records) == before
        fail = CommandRecord("nitro-emu describe-enclaves", [], 1, 0.1, False, "E00")
        for _ in range(3):
            log.add(fail)
        assert len(log.records) == before + 1 and log.counts[-1] == 3
        log.add(CommandRecord("nitro-emu terminate-enclave --all", [], 0, 0.2, True))
        assert log.counts[-1] == 1 and len(log.records) == before + 2


def test_command_log_columns_line_up_when_a_command_wraps() -> None:
    long = CommandRecord("nitro-emu run-enclave --eif-path /var/lib/nitrodeck/eifs/payments.eif --memory 4096 "
                         "--cpu-count 2 --enclave-name payments-2", [], 27, 0.35, False, "E27")
    short = CommandRecord("nitro-emu describe-enclaves", [], 0, 12.5, True)
    console = Console(width=60, record=True)
    for record, count in ((long, 1), (short, 1), (long, 3)):
        console.print(render_record(record, count))
    text = console.export_text()
    lines = text.splitlines()
    column = lines[0].index("nitro-emu")
    assert len(lines) > 4 and all(line.index("nitro-emu") == column for line in lines if "nitro-emu" in line)
    # a wrapped command goes on under its own column, not under the result
    assert all(line[:column].strip() == "" for line in lines if "nitro-emu" not in line)
    assert "[E27]" in text and "x3" in lines[-1] + lines[-2]


async def test_audit_key_opens_the_viewer(nd_home: Path) -> None:
    app = frozen_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        await pilot.press("A")
        assert isinstance(app.screen, AuditScreen) and len(app.screen.entries) == len(AUDIT)
        await pilot.press("escape")
        assert not isinstance(app.screen, AuditScreen)


def test_fixed_scale_sparkline_and_ages() -> None:
    assert percent_bars([0, 50, 100], 3) == "▁▅█"
    assert percent_bars([3, 3, 3], 3) == "▁▁▁"  # a flat low load stays low (no min..max scaling)
    assert percent_bars([-5, 250], 2) == "▁█" and percent_bars(list(range(100)), 4) == percent_bars([96, 97, 98, 99], 4)
    assert [age_text(s) for s in (None, 5, 59.9, 79, 3599, 3600 * 5 + 60 * 7 + 59, 3600 * 26 + 300, 86400 * 3 + 3600 * 4)] == [
        "-", "<1m", "<1m", "1m", "59m", "5h7m", "1d2h", "3d4h"]


async def test_ages_move_on_between_refreshes(nd_home: Path) -> None:
    app = frozen_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        table = app.query_one("#enclaves", EnclaveTable)
        row = table.get_row_index(SHELL.enclave_id)
        age = table.columns_shown.index("Age")
        assert str(table.get_row_at(row)[age]) == "1m"
        start = app.source.now()
        # a tick whose ages read the same leaves the table alone (a redraw costs ~15 ms of CPU)
        unchanged = table._update_count
        app.source.now = lambda: start + timedelta(seconds=30)  # type: ignore[method-assign]
        app.dashboard._sample_host()
        await pilot.pause()
        assert str(table.get_row_at(row)[age]) == "1m" and table._update_count == unchanged
        later = start + timedelta(seconds=61)
        app.source.now = lambda: later  # type: ignore[method-assign]
        app.dashboard._sample_host()  # the host sample's timer; no describe-enclaves runs
        await pilot.pause()
        assert str(table.get_row_at(row)[age]) == "2m" and table._update_count > unchanged
        # the start to the second is in the detail pane
        table.move_cursor(row=row)
        await pilot.pause()
        started = app.snapshot.started[SHELL.enclave_id]  # type: ignore[union-attr]
        detail = str(app.query_one("#detail-body").render())
        assert f"started {started.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" in detail
        # the columns do not depend on how wide the ages are now
        cells = [{c: Text("x") for c in COLUMNS}]
        wide = [{**cells[0], "Age": Text("23h59m")}]
        for width in range(60, 120):
            assert fit(cells, width) == fit(wide, width)


async def test_live_ages_and_quit_message(nd_home: Path, tmp_path: Path) -> None:
    _lc, _eif, enclave_id = world_with_one_enclave(nd_home, tmp_path)
    source = LiveSource("emulator", False, lambda record: None)
    snapshot = source.snapshot()
    assert enclave_id in snapshot.started and snapshot.started[enclave_id] <= source.now()
    still = source.still_running()
    assert [e.enclave_id for e in still] == [enclave_id]
    message = quit_message(still)
    assert message is not None and "1 enclave still running on the emulator (tick)" in message
    assert "nitrodeck terminate --all" in message and quit_message([]) is None


def test_readme_key_table_lists_every_registry_key() -> None:
    from console import commands
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| key | what it does |"):]
    table = table[: table.index("\n\n")]
    written = {key for row in table.splitlines()[2:] for key in row.split("|")[1].replace("`", " ").split()}
    missing = [c.id for c in commands.COMMANDS for key in c.shown_key.split() if key not in written]
    assert missing == []
