"""Every screen and dialog of the TUI, rendered from the frozen world: `make screenshots`.

The same scenes feed the snapshot tests (tests/test_tui_snapshots.py), so the SVGs in
screenshots/ are what the tests compare against, modulo size. Usage:
``python -m console.screenshots OUTPUT_DIR`` writes ``<scene>-<W>x<H>.svg`` and ``.png`` (rsvg-convert).
"""

from __future__ import annotations

import asyncio
import html
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Footer, Input

from console.app import NitrodeckApp
from console.screens.base import Dialog
from console.screens.build import BuildDialog
from console.screens.doctor import DoctorScreen
from console.screens.error import ErrorDialog
from console.screens.frozen import FrozenSource
from console.screens.launch import LaunchDialog
from console.widgets.console_pane import ConsolePane
from core.backends.driver import hint_for
from core.errors import NitroCliError

SIZES = ((80, 24), (160, 48))
Setup = Callable[[Pilot[int]], Awaitable[None]]


async def wait_until(pilot: Pilot[int], condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let workers and timers run until ``condition`` holds (raises after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("the TUI did not reach the expected state")
        await pilot.pause(0.02)


def _still_cursors(app: NitrodeckApp) -> None:
    # A blinking cursor would make two renders of the same state differ.
    for box in app.screen.query(Input):
        box.cursor_blink = False
    for box in app.query(Input):
        box.cursor_blink = False


async def settle(pilot: Pilot[int]) -> None:
    """The frozen world loaded, the console flushed, dialogs filled in."""
    app = pilot.app
    assert isinstance(app, NitrodeckApp)
    await wait_until(pilot, lambda: app.snapshot is not None and app.doctor_report is not None)
    doctor = next((s for s in app.screen_stack if isinstance(s, DoctorScreen)), None)
    if doctor is not None:
        await wait_until(pilot, lambda: doctor.report is not None)
    pane = app.query_one("#console", ConsolePane)
    enclave, exited = app.selected()
    if enclave is not None and exited:
        await wait_until(pilot, lambda: bool(pane.raw) and not pane.inbox and pane.note != "exited: kept log")  # read, noted
    elif enclave is not None and enclave.debug_mode:
        await wait_until(pilot, lambda: len(pane.raw) >= len(app.source.console_lines) and not pane.inbox)  # type: ignore[attr-defined]
    if isinstance(app.screen, LaunchDialog):
        dialog = app.screen
        await wait_until(pilot, lambda: bool(dialog.info))
    _still_cursors(app)
    app.clear_notifications()
    # The footer recomposes its keys after focus settles (a frame or two after mount); a scene taken
    # before that would show an empty footer. Wait for the keys to be laid out, then one more frame.
    footer = app.screen.query_one(Footer) if app.screen.query(Footer) else app.screen_stack[0].query_one(Footer)
    await wait_until(pilot, lambda: bool(footer.children) and all(key.region.width for key in footer.children))
    await pilot.pause(0.1)


async def _select_debug(pilot: Pilot[int]) -> None:
    await wait_until(pilot, lambda: pilot.app.snapshot is not None)  # type: ignore[attr-defined]
    await pilot.press("down")


async def _select_exited(pilot: Pilot[int]) -> None:
    await wait_until(pilot, lambda: pilot.app.snapshot is not None)  # type: ignore[attr-defined]
    app = pilot.app
    assert isinstance(app, NitrodeckApp)
    for _ in range(8):  # exited rows come after the running ones
        if app.selected()[1]:
            break
        await pilot.press("down")


def _keys(*keys: str, before: Setup | None = None) -> Setup:
    async def run(pilot: Pilot[int]) -> None:
        await wait_until(pilot, lambda: pilot.app.snapshot is not None)  # type: ignore[attr-defined]
        if before is not None:
            await before(pilot)
        await pilot.press(*keys)
        await settle(pilot)

    return run


async def _launch_error(pilot: Pilot[int]) -> None:
    await _keys("l")(pilot)
    dialog = pilot.app.screen
    assert isinstance(dialog, LaunchDialog)
    dialog.query_one("#memory", Input).value = "8192"
    dialog.start()
    await settle(pilot)


async def _test_sign_result(pilot: Pilot[int]) -> None:
    await _keys("s")(pilot)
    dialog = pilot.app.screen
    assert isinstance(dialog, Dialog)
    dialog.start()  # type: ignore[attr-defined]
    await wait_until(pilot, lambda: getattr(dialog, "report", None) is not None)
    await settle(pilot)


async def _build_result(pilot: Pilot[int]) -> None:
    # the payload (the default source) built: stages, measurements and the offer to pin them
    await _keys("b")(pilot)
    dialog = pilot.app.screen
    assert isinstance(dialog, BuildDialog)
    dialog.start()
    await wait_until(pilot, lambda: dialog.result is not None and "done" in dialog.stages)
    await settle(pilot)


async def _tool_error(pilot: Pilot[int]) -> None:
    # The frozen launch fails the way nitro-cli does (E27): the error dialog path.
    await _keys("l")(pilot)
    dialog = pilot.app.screen
    assert isinstance(dialog, LaunchDialog)
    dialog.query_one("#memory", Input).value = "512"
    dialog.start()
    await wait_until(pilot, lambda: not dialog.query_one("#dialog-error").has_class("hidden"))
    await settle(pilot)


async def _action_failed(pilot: Pilot[int]) -> None:
    # A failure that belongs to no open dialog goes through the app's one worker-outcome handler.
    await _keys()(pilot)
    app = pilot.app
    assert isinstance(app, NitrodeckApp)

    def terminate() -> None:
        from emulator.errors import detail

        # what the emulator (as nitro-cli) says when the enclave's process is gone: E11, its own text
        raise NitroCliError(
            code="E11",
            message=detail("E11", []),
            hint=hint_for("E11", "", app.source.backend),
            log_path="/var/log/nitro_enclaves/err2026-11-27T12:00:00.000000000+00:00.log",
        )

    app._run_action("terminate", terminate, None, "terminate-enclave")
    await wait_until(pilot, lambda: isinstance(app.screen, ErrorDialog))
    await settle(pilot)


@dataclass(frozen=True)
class Scene:
    name: str
    setup: Setup
    read_only: bool = False
    #: the frozen doctor reports one failing check (the header shows it)
    doctor_fails: bool = False
    #: the frozen world has an enclave that exited (the journal's EXITED row)
    exited: bool = False


SCENES: tuple[Scene, ...] = (
    Scene("dashboard", _keys()),
    Scene("dashboard-debug-console", _keys(before=_select_debug)),
    Scene("dashboard-resources", _keys("2")),
    Scene("dashboard-detail", _keys("1", before=_select_debug)),
    Scene("dashboard-commands", _keys("4")),
    Scene("dashboard-read-only", _keys(), read_only=True),
    Scene("dashboard-sorted-filtered", _keys("o", "O", "slash", *"pay", "enter")),
    Scene("yank", _keys("y", before=_select_debug)),
    Scene("audit-log", _keys("A")),
    Scene("help", _keys("question_mark")),
    Scene("help-read-only", _keys("question_mark"), read_only=True),
    Scene("build", _keys("b")),
    Scene("build-result", _build_result),
    Scene("launch", _keys("l")),
    Scene("launch-invalid", _launch_error),
    Scene("launch-failed", _tool_error),
    Scene("terminate", _keys("t")),
    Scene("terminate-all", _keys("T")),
    Scene("pin", _keys("P")),
    Scene("action-failed", _action_failed),
    Scene("test-sign", _test_sign_result),
    Scene("doctor", _keys("d"), doctor_fails=True),
    Scene("dashboard-doctor-failing", _keys(), doctor_fails=True),
    # an enclave that crashed 0.3 s after boot: its EXITED row, its kept console, then its detail
    Scene("dashboard-exited", _keys(before=_select_exited), exited=True),
    Scene("dashboard-exited-detail", _keys("1", before=_select_exited), exited=True),
)
BY_NAME = {s.name: s for s in SCENES}


def scene_app(scene: Scene) -> NitrodeckApp:
    """A frozen-world app with periodic refresh off (one refresh on mount)."""
    return NitrodeckApp(
        FrozenSource(read_only=scene.read_only, doctor_fails=scene.doctor_fails, exited=scene.exited), refresh_seconds=0
    )


async def render(scene: Scene, size: tuple[int, int]) -> str:
    app = scene_app(scene)
    async with app.run_test(size=size) as pilot:
        await scene.setup(pilot)
        return app.export_screenshot(title=f"nitrodeck - {scene.name}")


_TEXT = re.compile(r'(<text [^>]*?\bx=")([\d.]+)("[^>]*?textLength=")([\d.]+)("[^>]*>)((?:&#160;)+)([^<]*)(</text>)')


def _for_rsvg(svg: str) -> str:
    """rsvg-convert drops the leading (non-breaking) spaces of each <text> run, which shifts
    indented text left in the PNG (browsers render the SVG right). Move such runs' x instead."""

    def shift(m: re.Match[str]) -> str:
        lead = m.group(6).count("&#160;")
        rest = m.group(7)
        if not rest.replace("&#160;", ""):
            return m.group(0)
        cells = lead + len(html.unescape(rest))
        width = float(m.group(4)) / cells
        x = float(m.group(2)) + lead * width
        length = float(m.group(4)) - lead * width
        return f"{m.group(1)}{x:g}{m.group(3)}{length:g}{m.group(5)}{rest}{m.group(8)}"

    return _TEXT.sub(shift, svg)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    converter = shutil.which("rsvg-convert")
    if converter is None:
        print("rsvg-convert not found: writing SVGs only (apt-get install librsvg2-bin)", file=sys.stderr)
    for scene in SCENES:
        for size in SIZES:
            svg = out / f"{scene.name}-{size[0]}x{size[1]}.svg"
            text = asyncio.run(render(scene, size))
            svg.write_text(text, encoding="utf-8")
            if converter is not None:
                subprocess.run([converter, "-o", str(svg.with_suffix(".png"))], input=_for_rsvg(text).encode(), check=True)
            print(svg)
    # `nitrodeck fleet` (console/agent/), frozen hosts: the table, and Enter on the first host
    from console.agent.fleet_frozen import render_fleet, render_fleet_dashboard

    for name, render_one in (("fleet", render_fleet), ("fleet-dashboard", render_fleet_dashboard)):
        for size in SIZES:
            svg = out / f"{name}-{size[0]}x{size[1]}.svg"
            text = asyncio.run(render_one(size))
            svg.write_text(text, encoding="utf-8")
            if converter is not None:
                subprocess.run([converter, "-o", str(svg.with_suffix(".png"))], input=_for_rsvg(text).encode(), check=True)
            print(svg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
