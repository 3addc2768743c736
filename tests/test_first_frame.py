"""console/first_frame.py: the enclaves drawn before Textual loads, on a real pseudo-terminal, from a
snapshot core took of emulated enclaves; the terminal's modes go back to the user's before Textual
saves them, and an error after the frame is printed outside the alternate screen."""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.first_frame import ENTER, LEAVE, TITLE, draw, render
from console.screens.source import EarlySource, Snapshot
from tests.conftest import REPO, require
from tests.test_emulator_run import build, configure, emu

pytestmark = pytest.mark.slow


def read_all(fd: int, wait: float = 0.5) -> str:
    out = b""
    while select.select([fd], [], [], wait)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
        wait = 0.1
    return out.decode("utf-8", "replace")


@pytest.fixture
def snapshot(nd_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Snapshot, str]]:
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    configure(nd_home)
    eif = build(nd_home, "echo up\nexec sleep 300", "framed")
    res = emu("run-enclave", "--eif-path", str(eif), "--memory", "64", "--cpu-count", "2",
              "--enclave-name", "a-rather-long-enclave-name-for-narrow-terminals")
    assert res.returncode == 0, res.stderr
    early = EarlySource("emulator", False)
    snap = early.source.peek_snapshot(30)
    assert snap is not None
    # peeking leaves the snapshot for the dashboard's first frame
    assert early.source.ready_snapshot() is snap
    yield snap, json.loads(res.stdout)["EnclaveID"]


def test_render_lists_the_enclaves_as_the_table_does(snapshot: tuple[Snapshot, str]) -> None:
    snap, enclave_id = snapshot
    wide = render(snap, 160, 48)
    lines = rows(wide)
    assert "EMULATOR" in lines[0] and "nitrodeck" in lines[0]
    assert TITLE.format(n=1) in lines[1]
    assert "(1 running)" not in wide  # worded apart from the dashboard's own title
    head = lines[2]
    for column in ("Name", "ID", "CID", "State", "Age", "CPUs", "MiB", "PCR0", "PCRs"):
        assert column in head
    row = lines[3]
    enclave = snap.enclaves[0]
    assert "a-rather-long-enclave-name-for-narrow-terminals" in row
    assert enclave_id[-8:] in row and "RUNNING" in row and str(enclave.cid) in row
    assert enclave.measurements is not None and enclave.measurements.pcr0[:8] in row
    assert ",".join(str(c) for c in enclave.cpu_ids) in row and "unpinned" in row

    narrow = rows(render(snap, 80, 24))
    assert " ID " not in narrow[2]  # the ID goes first, as in the table
    assert all(len(_plain(line)) <= 80 for line in narrow)
    assert "a-rather-long-enclave…" in narrow[3] or "…" in narrow[3]  # then the name is shortened
    assert "RUNNING" in narrow[3] and "unpinned" in narrow[3]

    short = rows(render(snap, 160, 4))
    assert len(short) == 3  # only what fits above the last line: no row at all here


def rows(frame: str) -> list[str]:
    """The frame's lines, each placed by its own cursor move (row;1H), in order."""
    import re

    parts = re.split(r"\x1b\[(\d+);1H", frame)
    assert parts[0] == "" and [int(n) for n in parts[1::2]] == list(range(1, len(parts) // 2 + 1))
    return parts[2::2]


def _plain(line: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line)


def test_draw_on_a_terminal_then_hand_over(snapshot: tuple[Snapshot, str], monkeypatch: pytest.MonkeyPatch) -> None:
    snap, _ = snapshot
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
        os.set_blocking(master, False)
        out = os.fdopen(os.dup(slave), "w", encoding="utf-8")
        tty_in = os.fdopen(os.dup(slave), "r", encoding="utf-8")
        monkeypatch.setattr(sys, "stdin", tty_in)
        monkeypatch.setenv("TERM", "xterm-256color")
        monkeypatch.delenv("NITRODECK_NO_FIRST_FRAME", raising=False)
        before = termios.tcgetattr(slave)
        assert before[3] & termios.ECHO

        frame = draw(lambda timeout: snap, out)
        assert frame is not None
        shown = read_all(master)
        assert shown.startswith(ENTER) and "a-rather-long-enclave-name-for-narrow-terminals" in shown
        during = termios.tcgetattr(slave)
        assert not during[3] & termios.ECHO and not during[3] & termios.ICANON  # keys are not drawn over it

        os.write(master, b"j")  # a key typed over the frame ...
        frame.handover()
        assert termios.tcgetattr(slave) == before  # ... the user's modes, for Textual to save and restore
        tty.setraw(tty_in.fileno(), termios.TCSANOW)  # what Textual's driver does next (TCSANOW: nothing flushed)
        assert select.select([tty_in.fileno()], [], [], 5)[0]
        assert os.read(tty_in.fileno(), 16) == b"j"  # ... and the key is still there for the dashboard

        frame.abort()  # e.g. the app failed to start: leave the alternate screen so the error shows
        assert read_all(master).endswith(LEAVE)
        frame.abort()
        assert read_all(master, 0.2) == ""  # once
    finally:
        os.close(master)
        os.close(slave)


def test_no_frame_without_a_snapshot_in_time_or_a_terminal(
    snapshot: tuple[Snapshot, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    snap, _ = snapshot
    master, slave = os.openpty()
    try:
        out = os.fdopen(os.dup(slave), "w", encoding="utf-8")
        monkeypatch.setattr(sys, "stdin", os.fdopen(os.dup(slave), "r", encoding="utf-8"))
        monkeypatch.setenv("TERM", "xterm-256color")
        asked: list[float] = []

        def late(timeout: float) -> None:
            asked.append(timeout)
            return None

        assert draw(late, out, wait_s=0.2) is None and 0 < asked[0] <= 0.2
        monkeypatch.setenv("TERM", "dumb")
        assert draw(lambda timeout: snap, out) is None
        monkeypatch.setenv("TERM", "xterm-256color")
        with open(tmp_path / "not-a-tty", "w") as plain:
            assert draw(lambda timeout: snap, plain) is None
        assert read_all(master, 0.2) == ""
        assert termios.tcgetattr(slave)[3] & termios.ECHO
    finally:
        os.close(master)
        os.close(slave)


def test_the_terminal_is_the_users_again_after_the_dashboard(nd_home: Path, snapshot: tuple[Snapshot, str]) -> None:
    """In tmux: the early frame, then the dashboard, then q: the shell's terminal echoes and reads lines
    again (Textual restores the modes it saved, which must not be the frame's)."""
    require(shutil.which("tmux") is not None, "tmux is not installed")
    socket = f"nd-ff-{os.getpid()}"
    modes = nd_home / "stty.txt"
    command = (
        f"cd {REPO} && env -u COLUMNS -u LINES NITRODECK_HOME={nd_home} NITRODECK_BACKEND=emulator "
        "NITRODECK_FIRST_FRAME_WAIT=30 "  # the frame is drawn however loaded the machine is
        f"PATH={Path(sys.executable).parent}:$PATH TERM=xterm-256color {sys.executable} -m console; "
        f"stty -a > {modes}; sleep 30"
    )
    subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-x", "120", "-y", "30", "-s", "ff", command],
                   check=True, timeout=20)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            screen = subprocess.run(["tmux", "-L", socket, "capture-pane", "-p", "-t", "ff"], capture_output=True,
                                    text=True, timeout=20).stdout
            if "(1 running)" in screen:
                break
            time.sleep(0.2)
        assert "(1 running)" in screen, screen
        subprocess.run(["tmux", "-L", socket, "send-keys", "-t", "ff", "q"], timeout=20)
        deadline = time.monotonic() + 30
        while not (modes.exists() and modes.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.2)
        flags = modes.read_text().split()
        assert "echo" in flags and "icanon" in flags, flags
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=20)
