"""The TUI and enclaves that exit on their own (issue 10), with Pilot against the real emulator:
an enclave that lives 0.3 s gets a dimmed EXITED row after the running ones, a notification naming
it, its kept console in the console pane and its journal events in the detail pane; `x` clears it
from view while the journal keeps it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from console.app import live_app
from console.screenshots import wait_until
from console.widgets.console_pane import ConsolePane
from console.widgets.detail import DetailPane
from console.widgets.enclave_table import EnclaveTable
from core.models import LaunchRequest
from core.ops.journal import format_time
from core.ops.lifecycle import Lifecycle
from tests.agent_world import script_eif
from tests.test_tui_live import write_world

pytestmark = pytest.mark.slow


def notifications(app: object) -> list[str]:
    return [n.message for n in app._notifications]  # type: ignore[attr-defined]


def state_cells(app: object) -> list[str]:
    table = app.query_one("#enclaves", EnclaveTable)  # type: ignore[attr-defined]
    col = table.columns_shown.index("State")
    return [str(table.get_row_at(i)[col]) for i in range(table.row_count)]


async def test_exited_row_notification_console_and_clear(nd_home: Path, tmp_path: Path) -> None:
    write_world(nd_home)
    lc = Lifecycle()
    crash = script_eif(lc, tmp_path, "crash", "echo config missing, giving up\nsleep 0.3\nexit 2\n")
    steady = script_eif(lc, tmp_path, "steady", "while true; do sleep 1; done\n")
    lc.launch(LaunchRequest(str(steady), 64, cpu_count=2, name="steady"))
    app = live_app("emulator", read_only=False, refresh_seconds=0.5)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None and len(app.snapshot.enclaves) == 1, 30)
        run = lc.launch(LaunchRequest(str(crash), 64, cpu_count=2, debug_mode=True, name="crasher"))
        await wait_until(pilot, lambda: run.enclave_id in app.exited_rows, 30)
        await wait_until(pilot, lambda: any("crasher exited after" in m for m in notifications(app)), 10)
        [message] = [m for m in notifications(app) if "crasher" in m]
        assert "(status 2)" in message

        # the row: after the running one, dimmed, EXITED with its uptime and how long ago
        states = state_cells(app)
        assert states[0] == "RUNNING" and states[1].startswith("EXITED ") and " ago" in states[1]
        table = app.query_one("#enclaves", EnclaveTable)
        assert "dim" in str(table.get_row_at(1)[0].style)

        # selected: its kept console and its events
        table.move_cursor(row=1)
        await wait_until(pilot, lambda: app.selected()[1], 10)
        pane = app.query_one("#console", ConsolePane)
        await wait_until(pilot, lambda: any("config missing, giving up" in line for line in pane.raw), 20)
        detail = str(app.query_one("#detail", DetailPane).query_one("#detail-body").render())
        assert "launched" in detail and "exited" in detail and "status 2" in detail

        # x clears it from view; the journal keeps it; no second notification
        await pilot.press("x")
        await wait_until(pilot, lambda: app.query_one("#enclaves", EnclaveTable).row_count == 1, 10)
        await pilot.pause(1.2)  # two more refreshes
        assert app.query_one("#enclaves", EnclaveTable).row_count == 1
        assert len([m for m in notifications(app) if "crasher exited" in m]) == 1
    assert [e.event for e in lc.journal.read(enclave="crasher")] == ["launched", "exited"]
    lc.terminate_all()


async def test_read_only_tui_shows_an_exit_it_does_not_write(nd_home: Path, tmp_path: Path) -> None:
    """Read-only, the TUI notices the exit itself and keeps it in memory (issue 9 item 10): the same
    EXITED row and notification, no journal line; when a process that may write records the exit, the
    row stays and no second notification comes."""
    write_world(nd_home)
    lc = Lifecycle()
    crash = script_eif(lc, tmp_path, "crash", "echo config missing, giving up\nsleep 0.3\nexit 2\n")
    app = live_app("emulator", read_only=True, refresh_seconds=0.5)
    journal = nd_home / "journal.jsonl"
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None, 30)
        run = lc.launch(LaunchRequest(str(crash), 64, cpu_count=2, debug_mode=True, name="crasher"))
        await wait_until(pilot, lambda: run.enclave_id in app.exited_rows, 30)
        await wait_until(pilot, lambda: any("crasher exited after" in m for m in notifications(app)), 10)
        assert "(status 2)" in next(m for m in notifications(app) if "crasher" in m)
        assert state_cells(app)[0].startswith("EXITED ")
        assert '"exited"' not in journal.read_text()  # the TUI wrote nothing

        lc.describe()  # a process that may write notices the same exit and records it
        assert journal.read_text().count('"exited"') == 1
        await pilot.pause(1.2)  # two more refreshes
        assert list(app.exited_rows) == [run.enclave_id] and state_cells(app)[0].startswith("EXITED ")
        assert len([m for m in notifications(app) if "crasher exited" in m]) == 1
    assert [e.event for e in lc.journal.read(enclave="crasher")] == ["launched", "exited"]


async def test_an_exit_noticed_late_says_when_it_ended(nd_home: Path) -> None:
    """An exit nobody watched is recorded when someone next looks, maybe hours later: the row's "ago"
    and the order of exited rows come from when it ended (the backend's ended_at), not from then."""
    write_world(nd_home)
    journal = Lifecycle().journal
    now = datetime.now(UTC)
    for name, ended in (("new-crash", now - timedelta(minutes=5)), ("old-crash", now - timedelta(hours=3))):
        journal.append("exited", enclave_id=f"i-0aa-enc{name}", name=name, uptime_s=0.4, uptime_source="backend",
                       ended_at=format_time(ended), exit_status=1, cpu_ids=[1], memory_mib=64)
    app = live_app("emulator", read_only=True, refresh_seconds=0.5)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: len(app.exited_rows) == 2, 30)
        await wait_until(pilot, lambda: len(state_cells(app)) == 2, 10)
        # newest exit first, though "old-crash" was recorded last
        assert state_cells(app) == ["EXITED 0.4s, 5m ago", "EXITED 0.4s, 3h ago"]
