"""core.ops.watch and the event-driven dashboard: changes made by another process reach the table
without any refresh timer, and the watcher survives its folder being deleted and made again."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from pathlib import Path

import pytest

from console.app import live_app
from console.screenshots import wait_until
from console.widgets.enclave_table import EnclaveTable
from core.ops.watch import DirWatcher
from tests.test_emulator_run import build, configure, emu


def _wait_in_thread(watcher: DirWatcher, timeout: float | None) -> tuple[threading.Thread, list[bool]]:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(watcher.wait(timeout)))
    thread.start()
    return thread, result


def test_a_file_appearing_wakes_the_watcher(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    with DirWatcher([folder]) as watcher:
        assert watcher.uses_inotify
        assert watcher.wait(0.05) is False  # nothing happened
        (folder / "i-1-enc1.sock").write_bytes(b"")
        assert watcher.wait(5) is True
        (folder / "i-1-enc1.sock").unlink()
        assert watcher.wait(5) is True
        (folder / ".enclaves-tmp").write_text("{}")
        os.replace(folder / ".enclaves-tmp", folder / "enclaves.json")  # the emulator's atomic table update
        assert watcher.wait(5) is True
        (tmp_path / "other").write_text("outside the folder")
        assert watcher.wait(0.1) is False  # a change elsewhere is not ours


def test_survives_the_folder_being_deleted_and_recreated(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "nitro_enclaves"
    with DirWatcher([folder]) as watcher:
        # the folder does not exist yet: its creation is a change
        folder.mkdir(parents=True)
        assert watcher.wait(5) is True
        (folder / "one").write_text("")
        assert watcher.wait(5) is True
        shutil.rmtree(tmp_path / "run")
        assert watcher.wait(5) is True
        folder.mkdir(parents=True)
        assert watcher.wait(5) is True
        (folder / "two").write_text("")
        assert watcher.wait(5) is True


def test_close_wakes_a_waiting_thread(tmp_path: Path) -> None:
    watcher = DirWatcher([tmp_path])
    thread, result = _wait_in_thread(watcher, 30)
    watcher.close()
    thread.join(5)
    assert not thread.is_alive() and result == [False]


def test_polling_fallback_sees_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.ops.watch as watch

    monkeypatch.setattr(watch, "_libc", lambda: None)  # a kernel without inotify
    monkeypatch.setattr(watch, "FALLBACK_POLL_S", 0.05)
    with DirWatcher([tmp_path]) as watcher:
        assert not watcher.uses_inotify
        assert watcher.wait(0.1) is False
        (tmp_path / "new").write_text("")
        assert watcher.wait(5) is True


@pytest.mark.slow
async def test_table_follows_another_process_without_a_timer(nd_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    configure(nd_home)
    eif = build(nd_home, "echo up\nexec sleep 300", "watched")
    app = live_app("emulator", read_only=False, refresh_seconds=0)  # no safety poll: only the watcher
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None, 30)
        assert app.snapshot is not None and app.snapshot.enclaves == []
        table = app.query_one("#enclaves", EnclaveTable)
        res = emu("run-enclave", "--eif-path", str(eif), "--memory", "64", "--cpu-count", "2", "--enclave-name", "watched")
        assert res.returncode == 0, res.stderr
        enclave_id = json.loads(res.stdout)["EnclaveID"]
        await wait_until(pilot, lambda: app.snapshot is not None and len(app.snapshot.enclaves) == 1, 15)
        assert app.snapshot is not None and [e.enclave_id for e in app.snapshot.enclaves] == [enclave_id]
        await pilot.pause()
        assert table.selected_id == enclave_id
        res = emu("terminate-enclave", "--enclave-id", enclave_id)
        assert res.returncode == 0, res.stderr
        await wait_until(pilot, lambda: app.snapshot is not None and app.snapshot.enclaves == [], 15)
        assert enclave_id in app.gone


@pytest.mark.slow
async def test_the_first_frame_lists_the_enclaves_described_before_textual_loaded(
    nd_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nitrodeck` describes the enclaves while Textual loads (EarlySource): the dashboard takes that
    snapshot as it mounts, so its first frame has the rows; the doctor and the EIF's describe-eif run
    after that frame."""
    from console.screens.source import EarlySource

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    configure(nd_home)
    eif = build(nd_home, "echo up\nexec sleep 300", "early")
    res = emu("run-enclave", "--eif-path", str(eif), "--memory", "64", "--cpu-count", "2", "--enclave-name", "early")
    assert res.returncode == 0, res.stderr
    enclave_id = json.loads(res.stdout)["EnclaveID"]
    early = EarlySource("emulator", False)
    assert early.source._prefetched is not None
    early.source._prefetched[0].join(30)
    app = live_app(early=early, refresh_seconds=0)
    async with app.run_test(size=(160, 48)) as pilot:
        # mounted: the row is there before any refresh worker ran
        assert app.snapshot is not None and [e.enclave_id for e in app.snapshot.enclaves] == [enclave_id]
        assert app.query_one("#enclaves", EnclaveTable).row_count == 1
        assert not any(w.name == "refresh" for w in app.screen_stack[0].workers)
        await wait_until(pilot, lambda: app.doctor_report is not None, 30)
        await wait_until(pilot, lambda: app.snapshot is not None and enclave_id in app.snapshot.eifs, 30)
        assert app.snapshot.eifs[enclave_id].image_name  # type: ignore[union-attr]


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0.1", "1e999"])
def test_refresh_must_be_a_finite_interval(value: str, nd_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # nan slipped through `refresh < 0.2` and a timer of inf overflows: both refused before the TUI opens
    import argparse

    from console.app import run_tui

    assert run_tui(argparse.Namespace(refresh=float(value), backend="emulator", read_only=False)) == 2
    assert "--refresh must be from 0.2" in capsys.readouterr().err


@pytest.mark.slow
def test_status_watch_prints_a_change_without_waiting_for_the_interval(nd_home: Path) -> None:
    import queue
    import subprocess

    from tests.conftest import REPO

    configure(nd_home)
    eif = build(nd_home, "echo up\nexec sleep 300", "watched")
    proc = subprocess.Popen(
        [sys.executable, "-m", "console", "status", "--watch", "600", "--json"], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout or []], daemon=True).start()
    try:
        assert json.loads(lines.get(timeout=60))["enclaves"] == []
        res = emu("run-enclave", "--eif-path", str(eif), "--memory", "64", "--cpu-count", "2")
        assert res.returncode == 0, res.stderr
        # the interval is 10 minutes: only the watcher can make further objects come now (a launch is
        # several changes, so the enclave may show in the second or third)
        wanted = [json.loads(res.stdout)["EnclaveID"]]
        seen = []
        while not seen or seen[-1] != wanted:
            seen.append([e["EnclaveID"] for e in json.loads(lines.get(timeout=60))["enclaves"]])
        assert seen[-1] == wanted
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_describe_does_not_wake_the_watcher(nd_home: Path) -> None:
    # describe-enclaves takes the emulator's table lock (opened for writing, then closed): if that woke
    # the watcher, every describe would trigger the next one and the idle dashboard would never rest
    import subprocess

    from emulator.backend import emulator_backend

    configure(nd_home)
    emu("describe-enclaves")  # the first one creates the lock file
    with DirWatcher(emulator_backend().watch_dirs()) as watcher:
        for command in ("describe-enclaves", "emulator-describe"):
            res = subprocess.run([sys.executable, "-m", "emulator", command], capture_output=True, timeout=60)
            assert res.returncode == 0
            assert watcher.wait(0.5) is False, command


def test_a_wait_after_close_returns_at_once(tmp_path: Path) -> None:
    # an app that exits before its watch thread starts closes first and waits second: that wait must
    # not block (it hung the TUI's shutdown until pytest's timeout)
    watcher = DirWatcher([tmp_path])
    watcher.close()
    thread, result = _wait_in_thread(watcher, None)
    thread.join(5)
    assert not thread.is_alive() and result == [False]


def test_close_during_a_wait_keeps_the_descriptors_until_the_waiter_returns(tmp_path: Path) -> None:
    watcher = DirWatcher([tmp_path])
    watcher._waiters += 1  # a waiter that has not reached select() yet
    fd = watcher._fd
    watcher.close()
    os.fstat(fd)  # still ours: nothing else can have been given this number
    watcher._waiters -= 1
    assert watcher.wait(None) is False
    with pytest.raises(OSError):
        os.fstat(fd)
