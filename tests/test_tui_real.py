"""The TUI on the real backend, against the stand-in nitro-cli (tests/fake_nitro_cli) and a fake
device and sysfs configured through NITRODECK_DEVICE and NITRODECK_SYSFS: Pilot for the panes and
dialogs, one tmux run for what a terminal shows."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import RadioButton, Static

from console.app import live_app
from console.screens.build import BuildDialog
from tests.conftest import REPO, require
from tests.real_world import INSTANCE_ID, RealWorld, make_world
from tests.test_tui_live import wait_until


@pytest.fixture
def world(nd_home: Path, monkeypatch: pytest.MonkeyPatch) -> RealWorld:
    return make_world(nd_home, monkeypatch)


def text_of(app, selector: str) -> str:  # type: ignore[no-untyped-def]
    return str(app.query_one(selector, Static).render())


async def test_dashboard_shows_the_parent_as_nitro_cli_reports_it(world: RealWorld) -> None:
    run = world.cli_json("launch", "--eif-path", str(world.eif()), "--memory", "128", "--cpu-count", "2",
                         "--name", "signer")
    app = live_app(None, read_only=False, refresh_seconds=0)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None and len(app.snapshot.enclaves) == 1, 30)
        header = text_of(app, "#header")
        assert f"{INSTANCE_ID}" in header and "nitro-cli" in header and "READ-ONLY" not in header
        # describe --metadata: the image and its build metadata reach the detail pane
        await wait_until(pilot, lambda: "image app 1.0" in text_of(app, "#detail-body"), 10)
        assert "KernelVersion 4.14.256" in text_of(app, "#detail-body")
        await pilot.press("2")
        body = text_of(app, "#resources-body")
        assert "CPU pool 1,3  free none" in body and "signer" in body and "holds 1,3" in body
        assert "     2M    0    256    192     64       384" in body  # exact pages: 64 held of 256
        assert app.check_action("launch", ()) is True
    assert run["CPUIDs"] == [1, 3]


async def test_no_device_no_driver_and_a_partial_describe_are_said(world: RealWorld) -> None:
    a = world.cli_json("launch", "--eif-path", str(world.eif()), "--memory", "64", "--cpu-ids", "1", "--name", "a")
    b = world.cli_json("launch", "--eif-path", str(world.eif()), "--memory", "64", "--cpu-ids", "3", "--name", "b")
    world.set_knobs(unanswered=[b["EnclaveID"]])
    world.device.unlink()
    shutil.rmtree(world.sysfs / "module")
    app = live_app(None, read_only=False, refresh_seconds=0)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None, 30)
        header = text_of(app, "#header")
        assert "READ-ONLY" in header and "no device" in header
        assert "1 enclave process(es) did not answer" in header
        assert [e.enclave_id for e in app.snapshot.enclaves] == [a["EnclaveID"]]
        await pilot.press("2")
        assert "the Nitro Enclaves driver is not loaded" in text_of(app, "#resources-body")
        # the device is missing: launch and terminate are off, build stays on
        assert app.check_action("launch", ()) is False and app.check_action("terminate", ()) is False
        assert app.check_action("build", ()) is True
        app.action_launch()  # the palette path: refused with the reason, not "restart without --read-only"
        await pilot.pause()
        assert any("does not exist" in n.message and "--read-only" not in n.message for n in app._notifications)


async def test_build_dialog_fits_the_real_backend(world: RealWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{world.root}/no-docker.sock")
    app = live_app(None, read_only=False, refresh_seconds=0)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None, 30)
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, BuildDialog), 10)
        dialog = app.screen
        assert isinstance(dialog, BuildDialog)
        # no payload default on nitro-cli without a daemon; the rootfs source is the emulator's
        assert dialog.source == "uri"
        await wait_until(pilot, lambda: "no Docker daemon" in text_of(dialog, "#docker-note"), 20)
        note = text_of(dialog, "#docker-note")
        assert "nitro-cli builds every EIF from a Docker image" in note and "rootfs" not in note
        for key in ("payload", "rootfs", "docker"):
            assert dialog.query_one(f"#src-{key}", RadioButton).disabled


@pytest.mark.slow
def test_tmux_dashboard_on_the_real_backend(world: RealWorld) -> None:
    require(shutil.which("tmux") is not None, "tmux is not installed")
    world.cli_json("launch", "--eif-path", str(world.eif()), "--memory", "128", "--cpu-count", "2", "--name", "signer")
    world.device.unlink()
    socket = f"nd-real-{os.getpid()}"
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in world.env.items()
                   if k.startswith(("NITRODECK_", "FAKE_NITRO_CLI_", "NITRO_CLI_")) or k == "PATH")
    command = f"cd {REPO} && env -u COLUMNS -u LINES {env} TERM=xterm-256color {sys.executable} -m console --refresh 0.5"
    subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-x", "160", "-y", "48", "-s", "tui", command],
                   check=True, timeout=20)
    try:
        def screen() -> str:
            return subprocess.run(["tmux", "-L", socket, "capture-pane", "-p", "-t", "tui"], capture_output=True,
                                  text=True, timeout=20).stdout

        deadline = time.monotonic() + 40
        shown = ""
        while time.monotonic() < deadline:
            shown = screen()
            if "signer" in shown and "no device" in shown:
                break
            time.sleep(0.3)
        assert "signer" in shown and "READ-ONLY" in shown and "no device" in shown, shown
        assert INSTANCE_ID in shown and "nitro-cli" in shown
        subprocess.run(["tmux", "-L", socket, "send-keys", "-t", "tui", "2"], timeout=20)
        deadline = time.monotonic() + 20
        while "CPU pool 1,3" not in shown and time.monotonic() < deadline:
            time.sleep(0.3)
            shown = screen()
        assert "CPU pool 1,3  free none" in shown, shown
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], timeout=20)


@pytest.mark.docker
async def test_build_dialog_offers_the_payload_when_the_daemon_answers(world: RealWorld, docker_client: object) -> None:
    app = live_app(None, read_only=False, refresh_seconds=0)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None, 30)
        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, BuildDialog), 10)
        dialog = app.screen
        assert isinstance(dialog, BuildDialog)
        await wait_until(pilot, lambda: "on the local daemon" in text_of(dialog, "#docker-note")
                         or "no images" in text_of(dialog, "#docker-note"), 30)
        # nitro-cli can build the payload through this daemon: it is offered, as the default
        assert not dialog.query_one("#src-payload", RadioButton).disabled
        await wait_until(pilot, lambda: dialog.source == "payload", 5)
        assert dialog.query_one("#src-rootfs", RadioButton).disabled  # still the emulator's input only


async def test_launch_console_and_terminate_through_the_tui(world: RealWorld) -> None:
    """Every enclave operation of the dashboard against nitro-cli's words: a refused launch in the dialog,
    a debug launch, its console in the pane, a non-debug enclave's console (E44: said, no log kept),
    terminate with its confirmation; the fake sysfs gives back exactly what was held."""
    from textual.widgets import Checkbox, Input

    from console.screens.launch import LaunchDialog, PoolLimits
    from console.screens.terminate import ConfirmTerminate
    from console.widgets.console_pane import ConsolePane
    from core import home
    from tests.test_tui_live import commands_run, dialog_error

    eif = home.eif_library() / "app.eif"  # where the launch dialog lists EIFs
    eif.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(world.eif(), eif)
    quiet = world.cli_json("launch", "--eif-path", str(eif), "--memory", "64", "--cpu-ids", "1", "--name", "quiet")
    app = live_app(None, read_only=False, refresh_seconds=0.5)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None and len(app.snapshot.enclaves) == 1, 30)
        # the non-debug enclave is selected: it has no console (nitro-cli would say E44), and nothing is kept
        await pilot.press("3")
        pane = app.query_one("#console", ConsolePane)
        await wait_until(pilot, lambda: pane.note == "no console: not in debug mode", 20)
        assert not any(" console " in c for c in commands_run(app))  # nitro-cli's console is not even asked
        assert not (world.root.parent / "logs" / "console" / f"{quiet['EnclaveID']}.log").exists()

        # launch: more memory than the hugepages hold is refused by core, before nitro-cli runs
        await pilot.press("l")
        await wait_until(pilot, lambda: isinstance(app.screen, LaunchDialog), 10)
        launch = app.screen
        assert isinstance(launch, LaunchDialog)
        await wait_until(pilot, lambda: bool(launch.info), 20)
        launch.limits = PoolLimits(None, None)  # let core be the judge
        launch.query_one("#memory", Input).value = "4096"
        launch.query_one("#cpus", Input).value = "1"
        launch.start()
        await wait_until(pilot, lambda: bool(dialog_error(app)), 30)
        assert "ND-LAUNCH" in dialog_error(app) and "4096" in dialog_error(app)
        assert not any("run-enclave" in c for c in commands_run(app))
        # a debug launch on the free CPU runs nitro-cli run-enclave
        launch.query_one("#memory", Input).value = "128"
        launch.query_one("#debug", Checkbox).value = True
        launch.start()
        await wait_until(pilot, lambda: not isinstance(app.screen, LaunchDialog) or bool(dialog_error(app)), 30)
        assert not isinstance(app.screen, LaunchDialog), dialog_error(app)
        await wait_until(pilot, lambda: app.snapshot is not None and len(app.snapshot.enclaves) == 2, 20)
        state = {e["EnclaveName"]: e for e in world.state()["enclaves"]}
        assert sorted(state) == ["app", "quiet"] and state["app"]["Flags"] == "DEBUG_MODE"
        assert state["app"]["CPUIDs"] == [3] and world.free_pages() == 256 - 32 - 64
        assert any("run-enclave" in c and "--debug-mode" in c for c in commands_run(app))

        # its console streams into the pane (nitro-cli console), and is kept
        table = app.query_one("#enclaves")
        table.focus()
        debug_id = state["app"]["EnclaveID"]
        for _ in range(2):
            if app.selected()[0] is not None and app.selected()[0].enclave_id == debug_id:
                break
            await pilot.press("j")
        assert app.selected()[0] is not None and app.selected()[0].enclave_id == debug_id
        await wait_until(pilot, lambda: any("enclave app booted" in line for line in pane.raw), 20)

        # terminate after confirming: nitro-cli terminate-enclave, and its pages come back
        await pilot.press("t")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmTerminate), 10)
        await pilot.press("y")
        await wait_until(pilot, lambda: app.snapshot is not None and len(app.snapshot.enclaves) == 1, 30)
        assert [e["EnclaveName"] for e in world.state()["enclaves"]] == ["quiet"]
        assert world.free_pages() == 256 - 32
        assert any(f"terminate-enclave --enclave-id {debug_id}" in c for c in commands_run(app))
