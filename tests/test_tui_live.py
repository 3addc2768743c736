"""Every TUI action, driven with Pilot against the real lifecycle and the real emulator (nitro-emu).

One world per test: build the payload EIF through the build dialog, pin it, launch it (debug, so
the console streams), test-sign it, terminate it (its kept console log stays readable), then
terminate-all behind its typed confirmation. Failures must show code, message and hint.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from textual.widgets import Checkbox, Input, RadioButton, Static

from console.app import NitrodeckApp, live_app
from console.screens.build import BuildDialog
from console.screens.launch import LaunchDialog, PoolLimits
from console.screens.terminate import ConfirmTerminate, ConfirmTerminateAll
from console.screens.testsign import TestSignDialog
from console.screenshots import wait_until
from console.widgets.command_log import CommandLog
from console.widgets.console_pane import ConsolePane
from core.models import LaunchRequest
from core.ops.expected import ExpectedPcrs
from core.ops.lifecycle import Lifecycle

pytestmark = pytest.mark.slow

INSTANCE = "instance_id: i-0aaaabbbbccccdddd\nvcpus: 8\ncores: 4\nthreads_per_core: 2\nmemory_mib: 16384\n"
ALLOCATOR = "---\nmemory_mib: 1536\ncpu_count: 6\n"


def write_world(home: Path) -> None:
    (home / "emulator" / "etc").mkdir(parents=True)
    (home / "emulator" / "etc" / "allocator.yaml").write_text(ALLOCATOR)
    (home / "emulator" / "instance.yaml").write_text(INSTANCE)


@pytest.fixture
def world(nd_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The payload runs `python3 -m enclave_app`: the venv's python3 must come first on PATH.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    write_world(nd_home)
    return nd_home


def commands_run(app: NitrodeckApp) -> list[str]:
    return [str(r.command) for r in app.query_one("#commands", CommandLog).records]


def dialog_error(app: NitrodeckApp) -> str:
    box = app.screen.query_one("#dialog-error", Static)
    return "" if box.has_class("hidden") else str(box.render())


async def test_every_action_against_the_emulator(world: Path) -> None:
    app = live_app("emulator", read_only=False, refresh_seconds=0.5)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None, 30)
        assert app.snapshot is not None and app.snapshot.enclaves == []

        # build: a bad rootfs is refused before anything runs
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, BuildDialog))
        dialog = app.screen
        assert isinstance(dialog, BuildDialog)
        # the local Docker daemon's images load in a worker; without a daemon the dialog says so
        note = dialog.query_one("#docker-note", Static)
        await wait_until(pilot, lambda: bool(str(note.render()).strip()), 20)
        daemon = bool(os.environ.get("DOCKER_HOST")) or Path("/var/run/docker.sock").exists()
        assert ("on the local daemon" in str(note.render()) or "has no images" in str(note.render())) == daemon, str(note.render())
        dialog.query_one("#src-rootfs", RadioButton).value = True
        await pilot.pause()
        dialog.query_one("#rootfs", Input).value = str(world / "no-such-folder")
        dialog.start()
        await wait_until(pilot, lambda: bool(dialog_error(app)), 30)
        assert "ND-USAGE" in dialog_error(app) and "not a folder" in dialog_error(app)
        assert not any("build-enclave" in c for c in commands_run(app))

        # build the payload (the default source), then pin its measurements
        dialog.query_one("#src-payload", RadioButton).value = True
        await pilot.pause()
        out = world / "eifs" / "nitrodeck-payload.eif"
        dialog.query_one("#output", Input).value = str(out)
        dialog.start()
        await wait_until(pilot, lambda: dialog.result is not None or bool(dialog_error(app)), 60)
        assert dialog.result is not None, dialog_error(app)
        assert out.is_file()
        assert dialog.result.measurements.pcr0 in str(dialog.query_one("#result", Static).render()).replace("\n", "")
        assert "done" in dialog.stages
        # the offer to pin comes with the result (focus moves once the result is drawn)
        await wait_until(pilot, lambda: dialog.query_one("#pin").has_focus, 10)
        await pilot.press("enter")
        await wait_until(pilot, lambda: any((world / "expected").glob("*")), 20)
        # pinned under the EIF's own image name, from that file: the key its enclaves are judged by
        [pin] = ExpectedPcrs(world / "expected").all()
        assert pin.key == Lifecycle().describe_eif(out).image_name and pin.eif_path == str(out)
        await pilot.press("escape")
        assert any("build-enclave" in c for c in commands_run(app))

        # launch: too much memory is refused by the dialog; then a debug launch runs
        await pilot.press("l")
        await wait_until(pilot, lambda: isinstance(app.screen, LaunchDialog))
        launch = app.screen
        assert isinstance(launch, LaunchDialog)
        await wait_until(pilot, lambda: bool(launch.info), 20)
        launch.query_one("#memory", Input).value = "999999"
        launch.start()
        # the dialog refuses it, or core's pre-check does when the dialog's limits were not loaded yet
        await wait_until(pilot, lambda: bool(dialog_error(app)), 30)
        assert "free hugepage memory" in dialog_error(app)
        assert not any("run-enclave" in c for c in commands_run(app))
        launch.query_one("#memory", Input).value = "256"
        launch.query_one("#debug", Checkbox).value = True
        launch.start()
        await wait_until(pilot, lambda: not isinstance(app.screen, LaunchDialog) or bool(dialog_error(app)), 30)
        assert not isinstance(app.screen, LaunchDialog), dialog_error(app)
        await wait_until(pilot, lambda: app.snapshot is not None and len(app.snapshot.enclaves) == 1, 20)
        enclave = app.snapshot.enclaves[0]  # type: ignore[union-attr]
        assert enclave.debug_mode
        # the detail pane: the debug warning, and the EIF's own describe-eif details
        await wait_until(pilot, lambda: "EIF v4 nitrodeck-payload" in str(app.query_one("#detail-body", Static).render()))
        assert "all-zero PCRs" in str(app.query_one("#detail-body", Static).render()).replace("\n", " ")
        assert any("run-enclave" in c and "--debug-mode" in c for c in commands_run(app))

        # the console of the selected debug enclave streams into the pane
        pane = app.query_one("#console", ConsolePane)
        await wait_until(pilot, lambda: any("Run /init" in line for line in pane.raw), 20)
        assert pane.follow

        # test-sign: the checklist comes back; debug mode attests zeros, so those checks are red
        await pilot.press("s")
        await wait_until(pilot, lambda: isinstance(app.screen, TestSignDialog))
        sign = app.screen
        assert isinstance(sign, TestSignDialog)
        sign.start()
        await wait_until(pilot, lambda: sign.report is not None or bool(dialog_error(app)), 30)
        assert sign.report is not None, dialog_error(app)
        checks = {c.name: c.ok for c in sign.report.checks}
        assert checks["payload signature"] is True
        assert checks["debug mode"] is False and sign.report.ok is False
        shown = str(sign.query_one("#checklist", Static).render())
        assert "[FAIL]" in shown and "[ok]" in shown
        await pilot.press("escape")

        # a launch failure from the tool itself shows code, message, hint and the error log
        await pilot.press("l")
        await wait_until(pilot, lambda: isinstance(app.screen, LaunchDialog))
        launch = app.screen
        assert isinstance(launch, LaunchDialog)
        await wait_until(pilot, lambda: bool(launch.info), 20)
        launch.limits = PoolLimits(None, None)  # let core be the judge
        launch.query_one("#memory", Input).value = "8192"
        launch.start()
        await wait_until(pilot, lambda: bool(dialog_error(app)), 30)
        text = dialog_error(app)
        # core knows the free hugepages: refused before nitro-emu runs, naming the conflict
        assert "ND-LAUNCH" in text and "free hugepages" in text and "hint:" in text
        # half a core is the driver's to refuse: E29, with the error log's detail and a hint chosen by it
        launch.query_one("#memory", Input).value = "256"
        launch.query_one("#cpus", Input).value = "1"
        launch.start()
        await wait_until(pilot, lambda: "E29" in dialog_error(app), 30)
        text = dialog_error(app)
        assert "detail:" in text and "full CPU cores" in text and "hint:" in text and "error log:" in text
        await pilot.press("escape")

        # terminate the selected enclave after confirming; its kept console log stays readable
        await pilot.press("t")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmTerminate))
        await pilot.press("y")
        await wait_until(pilot, lambda: app.snapshot is not None and app.snapshot.enclaves == [], 30)
        await wait_until(pilot, lambda: enclave.enclave_id in app.gone, 10)
        await wait_until(pilot, lambda: "kept log" in pane.note and any("Run /init" in x for x in pane.raw), 10)

        # terminate-all asks for the word `all`; anything else leaves the enclaves alone
        lc = Lifecycle()
        for _ in range(2):
            lc.launch(LaunchRequest(str(out), memory_mib=128, cpu_count=2))
        await wait_until(pilot, lambda: app.snapshot is not None and len(app.snapshot.enclaves) == 2, 30)
        await pilot.press("T")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmTerminateAll))
        await pilot.press("a", "l", "enter")
        assert isinstance(app.screen, ConfirmTerminateAll) and "type `all`" in dialog_error(app)
        assert len(lc.describe()) == 2
        await pilot.press("l", "enter")
        await wait_until(pilot, lambda: app.snapshot is not None and app.snapshot.enclaves == [], 30)
        assert lc.describe() == []
        # the refresh may see the enclaves gone before terminate-all's own record arrives
        await wait_until(pilot, lambda: any("terminate-enclave --all" in c for c in commands_run(app)), 10)
