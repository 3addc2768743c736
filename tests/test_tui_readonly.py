"""Read-only: every mutating action is hidden and refused in the TUI (keys, palette, direct calls)
and by the lifecycle on its own, against the real emulator; nothing may change in the world."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from console import commands
from console.app import live_app
from console.screens.base import Dialog
from console.screenshots import wait_until
from core.errors import ReadOnlyError
from core.models import BuildRequest, LaunchRequest
from core.ops.lifecycle import Lifecycle

ALLOCATOR = "---\nmemory_mib: 512\ncpu_count: 4\n"
INSTANCE = "instance_id: i-0123401234012340a\nvcpus: 8\ncores: 4\nthreads_per_core: 2\nmemory_mib: 16384\n"
MUTATING = [c for c in commands.COMMANDS if c.mutating]


def world_with_one_enclave(home: Path, tmp: Path) -> tuple[Lifecycle, Path, str]:
    (home / "emulator" / "etc").mkdir(parents=True)
    (home / "emulator" / "etc" / "allocator.yaml").write_text(ALLOCATOR)
    (home / "emulator" / "instance.yaml").write_text(INSTANCE)
    rootfs = tmp / "rootfs"
    rootfs.mkdir()
    (rootfs / "run.sh").write_text("#!/bin/sh\nwhile true; do echo tick; sleep 1; done\n")
    (rootfs / "run.sh").chmod(0o755)
    lc = Lifecycle()
    eif = tmp / "tick.eif"
    lc.build(BuildRequest(str(eif), rootfs=str(rootfs), cmd="/bin/sh /run.sh", name="tick"))
    run = lc.launch(LaunchRequest(str(eif), memory_mib=128, cpu_count=2, name="tick"))
    return lc, eif, run.enclave_id


def audit_size(home: Path) -> int:
    log = home / "audit.log"
    return log.stat().st_size if log.exists() else 0


def test_read_only_turns_itself_on_without_device_access(nd_home: Path) -> None:
    # A real backend on a host where this user cannot write /dev/nitro_enclaves (here: none at all)
    # (no flag given): launch and terminate are off, building and pinning need no device and stay on
    app = live_app("real", read_only=False, refresh_seconds=0)
    assert not app.read_only and app.device_blocked
    assert app.read_only_reason.kind == "device-missing"
    for action in ("launch", "terminate", "terminate_all"):
        assert app.check_action(action, ()) is False
    assert app.check_action("build", ()) is True and app.check_action("pin", ()) is True


def test_registry_marks_the_mutating_commands() -> None:
    assert {c.id for c in MUTATING} == {"build", "launch", "terminate", "terminate-all", "pin"}
    assert not [c for c in commands.visible(read_only=True) if c.mutating]
    # every registry key is bound exactly once (the footer, help and palette share them)
    keys = [c.key for c in commands.COMMANDS]
    assert len(keys) == len(set(keys))


async def test_read_only_hides_and_refuses_everything(nd_home: Path, tmp_path: Path) -> None:
    lc, eif, enclave_id = world_with_one_enclave(nd_home, tmp_path)
    audit_before = audit_size(nd_home)
    library_before = sorted((nd_home / "eifs").glob("*")) if (nd_home / "eifs").exists() else []

    app = live_app("emulator", read_only=True, refresh_seconds=0)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None and len(app.snapshot.enclaves) == 1, 30)
        assert app.read_only

        # the footer shows no mutating key; check_action hides them all (the footer fills in after mount)
        await wait_until(pilot, lambda: bool(app.screen.query_one(Footer).query(FooterKey)), 10)
        footer_actions = {k.action for k in app.screen.query_one(Footer).query(FooterKey)}
        assert footer_actions and not footer_actions & {c.action for c in MUTATING}
        for command in MUTATING:
            assert app.check_action(command.action, ()) is False

        # every mutating key does nothing
        for command in MUTATING:
            await pilot.press(command.key)
            await pilot.pause()
            assert not isinstance(app.screen, Dialog), f"{command.key} opened {app.screen!r}"
            if command.key == "T":
                await pilot.press("a", "l", "l", "enter")

        # the palette offers none of them, whatever is typed
        await pilot.press("colon")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette))
        palette = app.screen

        def shown() -> list[str]:
            found = palette.query_one(CommandList)
            return [str(found.get_option_at_index(i).prompt) for i in range(found.option_count)]

        # empty query: the palette lists everything it offers (waiting for the last one proves it did)
        await wait_until(pilot, lambda: any("Quit" in text for text in shown()))
        assert not [t for t in shown() for c in MUTATING if t.startswith(c.label)], shown()
        # a query that matches both kinds: only the allowed one comes back
        await pilot.press("t", "e")
        await wait_until(pilot, lambda: any("Test-sign" in text for text in shown()))
        assert not any(("Terminate" in text or "Term. all" in text) for text in shown()), shown()
        await pilot.press("escape")

        # and the palette's entry point refuses them even if called directly
        for command in MUTATING:
            assert await app.run_command(command.id) is False
            await pilot.pause()
            assert not isinstance(app.screen, Dialog)

        # the dialog services refuse too (defence in depth)
        app.start_launch(LaunchRequest(str(eif), memory_mib=128, cpu_count=2), None)  # type: ignore[arg-type]
        await pilot.pause(0.5)

    # the lifecycle refuses on its own
    ro = Lifecycle(read_only=True)
    with pytest.raises(ReadOnlyError):
        ro.build(BuildRequest(str(tmp_path / "x.eif"), rootfs=str(tmp_path / "rootfs")))
    with pytest.raises(ReadOnlyError):
        ro.launch(LaunchRequest(str(eif), memory_mib=128, cpu_count=2))
    with pytest.raises(ReadOnlyError):
        ro.terminate(enclave_id)
    with pytest.raises(ReadOnlyError):
        ro.terminate_all()
    assert ro.expected_for(lc.find(enclave_id)) is None
    running = lc.describe()
    with pytest.raises(ReadOnlyError):
        ro.pin("tick", running[0].measurements)  # type: ignore[arg-type]

    # nothing happened: the same single enclave runs, nothing built, pinned or audited
    assert [e.enclave_id for e in lc.describe()] == [enclave_id]
    assert not (tmp_path / "x.eif").exists()
    after = sorted((nd_home / "eifs").glob("*")) if (nd_home / "eifs").exists() else []
    assert after == library_before
    assert not (nd_home / "expected").exists() or not any((nd_home / "expected").iterdir())
    assert audit_size(nd_home) == audit_before


async def test_empty_detail_pane_names_only_keys_that_work() -> None:
    """With no enclave the detail pane used to say "Launch one with `l`" in read-only mode too, where
    `l` is hidden; it names only what works: everything, build alone (a device reason), or nothing."""
    from textual.widgets import Static

    from console.app import NitrodeckApp
    from console.screens.frozen import FrozenSource
    from core.backends.real import ReadOnlyReason

    device = ReadOnlyReason("device-missing", "read-only: no /dev/nitro_enclaves", "load the driver")
    for read_only, reason, shown, absent in (
        (False, None, "Launch one with `l` (or build an EIF first with `b`).", "read-only"),
        (True, None, "read-only: nothing to show until an enclave runs.", "`"),
        (False, device, "Launching is refused here (see the header); EIFs can still be built with `b`.", "`l`"),
    ):
        source = FrozenSource(read_only=read_only, enclaves=[])
        if reason is not None:
            source.read_only_reason = reason
        app = NitrodeckApp(source, refresh_seconds=0)
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_until(pilot, lambda app=app: app.snapshot is not None, 10)
            await pilot.pause()
            body = str(app.query_one("#detail-body", Static).render())
            assert body.startswith("No enclave selected.") and shown in body and absent not in body, body
    # an unpinned enclave: `P` pins it, except where `P` is hidden
    from console.screens.frozen import PAYMENTS
    from console.widgets.detail import render_detail

    assert "(P pins these)" in render_detail(PAYMENTS, "unpinned", None).plain
    assert "(P pins these)" not in render_detail(PAYMENTS, "unpinned", None, read_only=True).plain
