"""The doctor in the TUI: its own screen (key `d`, the palette), re-run with `r`, and the header badge
when a check fails. The frozen world's doctor is fixed; the live one runs against the emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from textual.widgets import Static

from console.app import NitrodeckApp
from console.commands import BY_ID, help_rows
from console.screens.doctor import DoctorScreen
from console.screens.frozen import FrozenSource
from console.screenshots import settle, wait_until
from console.widgets.header import StatusHeader


class CountingSource(FrozenSource):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.doctor_runs = 0

    def doctor(self) -> Any:
        self.doctor_runs += 1
        return super().doctor()


def plain(renderable: Any, width: int = 200) -> str:
    console = Console(width=width, record=True)
    console.print(renderable)
    return console.export_text()


def header_text(app: NitrodeckApp) -> str:
    return plain(app.screen_stack[0].query_one("#header", StatusHeader).content)


async def test_doctor_screen_shows_the_failing_check_with_its_fix() -> None:
    source = CountingSource(doctor_fails=True)
    app = NitrodeckApp(source, refresh_seconds=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "DOCTOR: 1 failing (hugepages)" in header_text(app)
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, DoctorScreen))
        screen = app.screen
        assert isinstance(screen, DoctorScreen)
        await wait_until(pilot, lambda: screen.report is not None)
        body = plain(screen.query_one("#doctor-body", Static).content)
        lines = [line for line in body.splitlines() if line.strip()]
        # problems first, then the rest; the fix under the failing check
        assert lines[1].startswith("FAIL") and "hugepages" in lines[1] and "1024 MiB short" in body
        assert "fix: lower memory_mib in /var/lib/nitrodeck/emulator/etc/allocator.yaml" in body
        assert "warn" in lines[3] or "warn" in body.split("FAIL")[1]
        title = plain(screen.query_one("#doctor-title", Static).content)
        assert "1 failing, 1 warning" in title and "12:00:00 UTC" in title
        # r runs the checks again (the dashboard's r, refresh, is not what runs under this screen)
        runs = source.doctor_runs
        await pilot.press("r")
        await wait_until(pilot, lambda: source.doctor_runs > runs)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, DoctorScreen))


async def test_no_badge_when_nothing_fails_and_palette_opens_the_screen() -> None:
    app = NitrodeckApp(FrozenSource(), refresh_seconds=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.doctor_report is not None and app.doctor_report.ok
        assert "DOCTOR" not in header_text(app)
        await app.run_command("doctor")
        await wait_until(pilot, lambda: isinstance(app.screen, DoctorScreen) and app.screen.is_mounted)
        await pilot.pause(0.1)
        assert "nothing failing, 1 warning" in plain(app.screen.query_one("#doctor-title", Static).content)


def test_doctor_is_in_the_registry_and_allowed_read_only() -> None:
    command = BY_ID["doctor"]
    assert command.key == "d" and not command.mutating
    assert any(key == "d" and label == "Doctor" for _, key, label, _ in help_rows(read_only=True))


async def test_live_doctor_on_the_emulator(nd_home: Path) -> None:
    from console.screens.source import LiveSource

    source = LiveSource("emulator", False, lambda record: None)
    report = source.doctor()
    assert report.backend == "emulator"
    ids = [c.id for c in report.checks]
    assert ids[:3] == ["instance", "device", "access"] and "hugepages" in ids and "disk" in ids
    hp = next(c for c in report.checks if c.id == "hugepages")
    assert hp.status == "ok" and hp.found.startswith("requested 512 MiB, present 512 MiB")
