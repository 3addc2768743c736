"""The dashboard's own behaviour on the frozen world: console follow/TAIL, search, wrap, save, the
kept log of an exited enclave, the table filter, pause, help from the registry, narrow layout."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.color import Color
from rich.console import Console
from textual.widgets import Input

from console import commands
from console.app import NitrodeckApp
from console.screens.frozen import LEGACY, PAYMENTS, SHELL, FrozenSource
from console.screens.help import HelpScreen, help_table
from console.screenshots import wait_until
from console.widgets.console_pane import ConsolePane
from console.widgets.enclave_table import EnclaveTable
from console.widgets.header import StatusHeader
from core import home

LONG = "x" * 300


class _Layouts:
    count = 0


@contextmanager
def counted_layouts() -> Iterator[_Layouts]:
    """Count the screen layouts Textual does inside the block (a layout redraws every pane)."""
    from textual.screen import Screen

    seen = _Layouts()
    original = Screen._refresh_layout

    def counting(screen: Screen, *args: object, **kwargs: object) -> None:
        seen.count += 1
        original(screen, *args, **kwargs)  # type: ignore[arg-type]

    Screen._refresh_layout = counting  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        Screen._refresh_layout = original  # type: ignore[method-assign]



def frozen_with_console(n: int = 400) -> FrozenSource:
    source = FrozenSource()
    source.console_lines = [f"line {i}" + (" ERROR disk" if i % 100 == 7 else "") for i in range(n)] + [LONG]
    return source


async def test_console_follow_search_wrap_save(nd_home: Path) -> None:
    source = frozen_with_console()
    app = NitrodeckApp(source, refresh_seconds=0)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        await pilot.press("down")  # the debug-mode enclave: its console streams
        pane = app.query_one("#console", ConsolePane)
        await wait_until(pilot, lambda: len(pane.raw) == 401 and not pane.inbox)
        log = pane.log_widget
        await wait_until(pilot, lambda: log.is_vertical_scroll_end)
        assert pane.follow and "TAIL" in str(pane.query_one("#tail-indicator").render())

        # scrolling up stops following: new lines do not move the view, the indicator says PAUSED
        await pilot.press("3")
        assert log.has_focus
        await pilot.press("pageup")
        await wait_until(pilot, lambda: not pane.follow)
        assert "PAUSED" in str(pane.query_one("#tail-indicator").render())
        where = log.scroll_y
        pane.push_many([f"more {i}" for i in range(50)])
        await wait_until(pilot, lambda: not pane.inbox)
        await pilot.pause(0.1)
        assert log.scroll_y == where and not log.is_vertical_scroll_end
        await pilot.press("end")
        await wait_until(pilot, lambda: pane.follow and log.is_vertical_scroll_end)

        # `/` in the console searches it; `n` walks the matches
        await pilot.press("slash")
        box = pane.query_one("#console-search", Input)
        assert box.has_focus
        await pilot.press(*"ERROR", "enter")
        assert len(pane._matches) == 4 and not pane.follow
        first = pane._match_at
        assert f"/ERROR: match {first + 1}/4" in str(pane.query_one("#console-title").render())
        await pilot.press("n")
        assert pane._match_at == (first + 1) % 4
        assert f"/ERROR: match {(first + 1) % 4 + 1}/4" in str(pane.query_one("#console-title").render())
        # N goes back
        await pilot.press("N")
        assert pane._match_at == first
        await pilot.press("N")
        assert pane._match_at == (first - 1) % 4
        assert f"match {(first - 1) % 4 + 1}/4" in str(pane.query_one("#console-title").render())
        await pilot.press("n")

        # wrap splits the long line to the pane's width, and back
        before = len(log.lines)
        await pilot.press("w")
        assert pane.wrap and len(log.lines) > before
        await pilot.press("w")
        assert not pane.wrap and len(log.lines) == before

        # save writes every kept raw line to a new file under the logs folder
        await pilot.press("S")
        saved = list(home.logs_dir().glob("console-*.log"))
        assert len(saved) == 1
        assert saved[0].read_text().splitlines() == list(pane.raw)


async def test_exited_enclave_shows_its_kept_log(nd_home: Path, tmp_path: Path) -> None:
    source = FrozenSource()
    kept = tmp_path / "kept.log"
    kept.write_text("booted\nworking\npanic: out of memory\n")
    source.kept_logs[SHELL.enclave_id] = kept
    app = NitrodeckApp(source, refresh_seconds=0)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        source.set_enclaves([PAYMENTS, LEGACY])
        app.refresh_status()
        await wait_until(pilot, lambda: SHELL.enclave_id in app.gone)
        table = app.query_one("#enclaves", EnclaveTable)
        table.move_cursor(row=table.get_row_index(SHELL.enclave_id))
        pane = app.query_one("#console", ConsolePane)
        await wait_until(pilot, lambda: list(pane.raw) == ["booted", "working", "panic: out of memory"])
        await wait_until(pilot, lambda: "kept log" in pane.note)
        enclave, exited = app.selected()
        assert enclave == SHELL and exited


async def test_filter_pause_help_and_narrow_layout(nd_home: Path) -> None:
    app = NitrodeckApp(FrozenSource(), refresh_seconds=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        table = app.query_one("#enclaves", EnclaveTable)
        assert table.row_count == 3 and app.query_one("#main").has_class("-narrow")

        await pilot.press("slash", *"legacy")
        assert table.row_count == 1 and table.selected_id == LEGACY.enclave_id
        await pilot.press("escape")
        assert table.row_count == 3 and table.has_focus

        await pilot.press("p")
        assert app.paused
        assert "PAUSED" in str(app.query_one("#header", StatusHeader).render())
        # the periodic tick does nothing while paused, and refreshes again once resumed
        before = app.snapshot
        app._tick()
        await pilot.pause(0.2)
        assert app.snapshot is before
        await pilot.press("p")
        assert not app.paused
        app._tick()
        await wait_until(pilot, lambda: app.snapshot is not before)

        # one pane at a time at 80 columns; the keys from the registry switch it
        for key, pane in (("1", "detail"), ("2", "resources"), ("4", "commands"), ("3", "console")):
            await pilot.press(key)
            shown = [name for name in ("detail", "resources", "console", "commands") if app.query_one(f"#{name}").display]
            assert shown == [pane]

        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        console = Console(width=250, record=True, file=io.StringIO())
        console.print(help_table(app.screen.read_only))
        text = console.export_text()
        for command in commands.COMMANDS:
            assert command.description in text and command.shown_key in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_table_columns_fit_the_width_and_detail_shows_every_pcr_in_full(nd_home: Path) -> None:
    source = FrozenSource()
    app = NitrodeckApp(source, refresh_seconds=0)
    essentials = ("Name", "CID", "State", "Flags", "CPUs", "MiB", "PCR0", "PCRs")
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        table = app.query_one("#enclaves", EnclaveTable)
        assert "ID" in table.columns_shown
        # 120 columns: the wide layout's table is 72 cells, too few for the ID; 100: the narrow layout's
        # full-width table has room for it again; 80: not
        for size, with_id in (((120, 36), False), ((100, 30), True), ((80, 24), False)):
            await pilot.resize_terminal(*size)
            await wait_until(pilot, lambda want=with_id: ("ID" in table.columns_shown) == want)
            await pilot.pause()
            assert all(col in table.columns_shown for col in essentials), size
            # every column fits: nothing is pushed off to the right
            assert table.virtual_size.width <= table.scrollable_content_region.width, size
            # the verdict column is whole, not cut to a letter
            verdicts = [str(table.get_cell_at((row, table.columns_shown.index("PCRs")))) for row in range(table.row_count)]
            assert verdicts == ["MATCH", "debug", "MISMATCH"], size

        # the detail pane: every PCR digit, actual and (for a mismatch) expected, and one metadata block
        await pilot.resize_terminal(160, 48)
        await pilot.press("down", "down")
        detail = app.query_one("#detail-body")
        await wait_until(pilot, lambda: LEGACY.label in str(detail.render()))
        text = "".join(str(detail.render()).split())  # the hex may be cut into lines
        for index, actual in LEGACY.measurements.pcrs().items():  # type: ignore[union-attr]
            assert actual in text and source.snapshot().expected[LEGACY.enclave_id][index] in text
        await pilot.press("up", "up")
        await wait_until(pilot, lambda: PAYMENTS.label in str(detail.render()))
        body = str(detail.render())
        assert body.count("BuildTime") == 1 and "DockerInfo.Config.Cmd" in body


async def test_build_over_an_existing_eif_asks_first(nd_home: Path, tmp_path: Path) -> None:
    from console.screens.build import BuildDialog
    from console.screens.terminate import Confirm

    source = FrozenSource()
    existing = tmp_path / "app.eif"
    existing.write_bytes(b"an older EIF")
    source.existing_outputs.add(existing)
    app = NitrodeckApp(source, refresh_seconds=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, BuildDialog))
        dialog = app.screen
        assert isinstance(dialog, BuildDialog)
        dialog.query_one("#output", Input).value = str(existing)
        dialog.start()
        await wait_until(pilot, lambda: isinstance(app.screen, Confirm))
        await pilot.press("n")  # declined: nothing is built
        await wait_until(pilot, lambda: app.screen is dialog)
        assert source.mutations == [] and dialog.result is None
        dialog.start()
        await wait_until(pilot, lambda: isinstance(app.screen, Confirm))
        await pilot.press("y")
        await wait_until(pilot, lambda: dialog.result is not None)
        assert source.mutations == ["build"]
        # a new output path builds without asking
        dialog.query_one("#output", Input).value = str(tmp_path / "new.eif")
        dialog.start()
        await wait_until(pilot, lambda: source.mutations == ["build", "build"])
        assert app.screen is dialog


def test_resources_pane_names_the_allocator_problem() -> None:
    """An allocator.yaml the allocator refuses empties the pools; the pane says why instead of 'none'."""
    from console.widgets.resources import render_resources
    from core.ops.resources import CpuPool, HostStats, Resources

    broken = Resources([], CpuPool([], {}, []), HostStats(1.0, 2, 1), [], "allocator.yaml: cpu_count conflicts with cpu_pool")
    assert "cpu_count conflicts with cpu_pool" in render_resources(broken, []).plain
    fine = Resources([], CpuPool([1, 5], {}, [1, 5]), HostStats(1.0, 2, 1), [], None)
    assert "conflicts" not in render_resources(fine, []).plain


async def test_console_stream_draws_the_tail_after_pruning_and_redraws_for_a_search(nd_home: Path) -> None:
    """The console log keeps rendered lines between flushes (by their number in the stream) and sets
    its size without laying the screen out: what is drawn must still be the newest lines after the
    log has pruned its head many times, and a search must redraw lines drawn before it."""

    source = FrozenSource()
    source.console_lines = []
    app = NitrodeckApp(source, refresh_seconds=0, console_max_lines=200)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        await pilot.press("down")  # the debug-mode enclave
        pane = app.query_one("#console", ConsolePane)
        log = pane.log_widget
        await wait_until(pilot, lambda: pane.enclave_label != "")

        async def feed(batches: range) -> None:
            for batch in batches:
                pane.push_many([f"line {batch * 10 + i}" + (" ERROR" if i == 3 else "") for i in range(10)])
                await wait_until(pilot, lambda: not pane.inbox)
                await pilot.pause()

        await feed(range(10))  # 100 lines: the scrollbar appears (one layout)
        with counted_layouts() as layouts:
            await feed(range(10, 15))  # the log grows: its scrollbar moves, nothing is laid out
        assert layouts.count == 0
        assert log.virtual_size.height == 150 and log.is_vertical_scroll_end

        await feed(range(15, 60))  # 600 lines through a 200-line log: pruned at every flush
        assert list(log.lines) == [f"line {n}" + (" ERROR" if n % 10 == 3 else "") for n in range(400, 600)]
        assert log.virtual_size.height == 200 and log.is_vertical_scroll_end
        await pilot.pause(0.1)
        height = log.scrollable_content_region.height
        shown = [log.render_line(y).text.rstrip() for y in range(height)]
        assert shown == list(log.lines)[-height:]

        # lines drawn before a search are drawn again with its highlight
        drawn = log.render_line(height - 7)  # line 593, drawn plain
        assert "593 ERROR" in drawn.text
        yellow = Color.parse("yellow")  # the search's "black on yellow"
        assert not any(seg.style is not None and seg.style.bgcolor == yellow for seg in drawn)
        assert pane.search("error") == 20
        await pilot.pause()
        pane.follow = True
        await pilot.pause()
        again = log.render_line(height - 7)
        assert "593 ERROR" in again.text
        assert any(seg.text == "ERROR" and seg.style is not None and seg.style.bgcolor == yellow for seg in again)


async def test_a_refresh_that_changes_nothing_repaints_nothing_and_ages_update_in_place(nd_home: Path) -> None:
    """Every safety poll hands each pane its text again: unchanged text is not repainted (no layout at
    all), and a refresh where only the ages moved updates those cells, keeping the selection."""
    from datetime import timedelta

    from console.screens.frozen import FROZEN_NOW

    class Ticking(FrozenSource):
        def __init__(self) -> None:
            super().__init__()
            self.clock = FROZEN_NOW

        def now(self):  # type: ignore[no-untyped-def]
            return self.clock

    source = Ticking()
    app = NitrodeckApp(source, refresh_seconds=0)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        table = app.query_one("#enclaves", EnclaveTable)
        await pilot.press("down")
        await pilot.pause(0.2)
        selected = table.selected_id
        age_col = table.columns_shown.index("Age")
        assert str(table.get_cell_at((1, age_col))) == "1m"

        with counted_layouts() as layouts:
            before = app.snapshot
            app.refresh_status()
            await wait_until(pilot, lambda: app.snapshot is not before)
            await pilot.pause(0.2)
            assert layouts.count == 0

            # a minute later only the ages differ: the cells change in place, the selection stays
            source.clock = FROZEN_NOW + timedelta(seconds=61)
            before = app.snapshot
            app.refresh_status()
            await wait_until(pilot, lambda: app.snapshot is not before)
            await wait_until(pilot, lambda: str(table.get_cell_at((1, age_col))) == "2m")
        assert table.selected_id == selected and table.row_count == 3
        assert [str(table.get_cell_at((row, age_col))) for row in range(3)] == ["3d4h", "2m", "1d2h"]

        # an hour later the cell is longer; then a shorter cell rebuilds the table (its columns fit
        # again): the ages of an hour before
        source.clock = FROZEN_NOW + timedelta(hours=1)
        before = app.snapshot
        app.refresh_status()
        await wait_until(pilot, lambda: str(table.get_cell_at((1, age_col))) == "1h1m")
        source.clock = FROZEN_NOW
        before = app.snapshot
        app.refresh_status()
        await wait_until(pilot, lambda: str(table.get_cell_at((1, age_col))) == "1m")
        assert table.selected_id == selected


async def test_following_a_long_console_does_not_redraw_its_scrollbar_until_the_thumb_moves(nd_home: Path) -> None:
    """Each flush makes the log longer and scrolls to its end: the scrollbar is told quietly when its
    thumb would be drawn the same (most flushes once the log is long), and its numbers stay exact."""
    from textual.scrollbar import ScrollBar

    source = FrozenSource()
    source.console_lines = []
    app = NitrodeckApp(source, refresh_seconds=0)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None)
        await pilot.press("down")  # the debug-mode enclave
        pane = app.query_one("#console", ConsolePane)
        log = pane.log_widget
        await wait_until(pilot, lambda: pane.enclave_label != "")
        pane.push_many([f"early {i}" for i in range(2000)])
        await wait_until(pilot, lambda: not pane.inbox and log.is_vertical_scroll_end)
        await pilot.pause(0.2)
        bar = log.vertical_scrollbar
        drawn = 0
        original = ScrollBar.render

        def counting(self: ScrollBar):  # type: ignore[no-untyped-def]
            nonlocal drawn
            if self is bar:
                drawn += 1
            return original(self)

        ScrollBar.render = counting  # type: ignore[method-assign]
        try:
            for batch in range(10):
                pane.push_many([f"late {batch} {i}" for i in range(10)])
                await wait_until(pilot, lambda: not pane.inbox)
                await pilot.pause()
        finally:
            ScrollBar.render = original  # type: ignore[method-assign]
        assert drawn <= 1, drawn  # its thumb is a cell at the bottom all along
        assert log.is_vertical_scroll_end and log.virtual_size.height == 2100
        assert bar.window_virtual_size == 2100 and bar.position == bar.validate_position(log.scroll_y)
        # and it is drawn where it is: scrolling to the top moves the thumb there
        log.scroll_home(animate=False)
        await pilot.pause()
        assert bar.position == 0
