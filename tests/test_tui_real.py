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
