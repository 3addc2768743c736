"""`nitrodeck` in a real terminal (tmux, 160x48) on a fresh home: build -> launch -> test-sign ->
terminate, by keys only, asserting on what the terminal shows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, require

pytestmark = pytest.mark.slow

ALLOCATOR = "---\nmemory_mib: 1536\ncpu_count: 4\n"
INSTANCE = "instance_id: i-0tmux0tmux0tmux00\nvcpus: 8\ncores: 4\nthreads_per_core: 2\nmemory_mib: 16384\n"


class Term:
    def __init__(self, socket: str, session: str) -> None:
        self.socket = socket
        self.session = session

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=20)
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.session)

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.tmux("send-keys", "-t", self.session, key)
            time.sleep(0.15)  # one key per frame: the app reads them as separate key events

    def wait_gone(self, text: str, timeout: float = 20.0) -> None:
        """Keys sent while a dialog is still closing would go to the dialog: wait it out."""
        deadline = time.monotonic() + timeout
        while text in self.screen():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} still on screen after {timeout}s:\n{self.screen()}")
            time.sleep(0.1)

    def wait_for(self, text: str, timeout: float = 40.0) -> str:
        deadline = time.monotonic() + timeout
        shown = ""
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not on screen within {timeout}s; screen was:\n{shown}")


@pytest.fixture
def term(nd_home: Path) -> Iterator[Term]:
    require(shutil.which("tmux") is not None, "tmux is not installed")
    (nd_home / "emulator" / "etc").mkdir(parents=True)
    (nd_home / "emulator" / "etc" / "allocator.yaml").write_text(ALLOCATOR)
    (nd_home / "emulator" / "instance.yaml").write_text(INSTANCE)
    socket = f"nd-tui-{os.getpid()}"
    term = Term(socket, "tui")
    env_bin = str(Path(sys.executable).parent)
    command = (
        f"cd {REPO} && env -u COLUMNS -u LINES NITRODECK_HOME={nd_home} NITRODECK_BACKEND=emulator PATH={env_bin}:$PATH "
        f"TERM=xterm-256color {sys.executable} -m console --refresh 0.5"
    )
    subprocess.run(
        ["tmux", "-L", socket, "new-session", "-d", "-x", "160", "-y", "48", "-s", "tui", command],
        check=True,
        timeout=20,
    )
    try:
        yield term
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=20)


def test_build_launch_sign_terminate_by_keys(term: Term, nd_home: Path) -> None:
    term.wait_for("EMULATOR")
    term.wait_for("i-0tmux0tmux0tmux00")
    term.wait_for("(0 running")

    # build the payload (the default source): tab to the output field; Enter moves from field to
    # field (output, name, cert, key) and builds from the last one
    term.keys("b")
    term.wait_for("Build an EIF")
    term.keys("Tab")
    for _ in range(4):
        time.sleep(0.5)  # as a person types: each Enter after the field before it has the cursor
        term.keys("Enter")
    term.wait_for("Built ", timeout=90)
    assert (nd_home / "eifs" / "nitrodeck-payload.eif").is_file()
    term.keys("Enter")  # the focused "Pin PCRs" button
    term.wait_for("Pinned as the expected PCRs of nitrodeck-payload")
    term.keys("Escape")
    term.wait_gone("Build an EIF")

    # launch it (2 CPUs, the suggested memory, production mode): tab to CPUs; Enter walks CPUs,
    # memory, debug mode, CID and name, and launches from the last field
    term.keys("l")
    term.wait_for("Launch an enclave")
    term.wait_for("needs >=")  # describe-eif details arrived
    term.keys("Tab")
    for _ in range(5):
        time.sleep(0.5)
        term.keys("Enter")
    term.wait_gone("Launch an enclave", timeout=60)
    term.wait_for("(1 running", timeout=60)
    # the title and the row's cells can reach tmux in different frames: wait for the verdict itself
    shown = term.wait_for("MATCH", timeout=30)
    assert "nitrodeck-payload" in shown and "MISMATCH" not in shown
    term.wait_for("nitro-emu run-enclave")  # the command log shows the exact command

    # test-sign: every check green
    term.keys("s")
    term.wait_for("Test-sign with")
    term.keys("Enter")
    term.wait_for("PASS", timeout=60)
    # the verdict and its checks can reach tmux in different frames: read the checks once drawn
    shown = term.wait_for("[ok]", timeout=10)
    assert "PASS" in shown and "[FAIL]" not in shown
    term.keys("Escape")
    term.wait_gone("Test-sign with")

    # terminate, after confirming
    term.keys("t")
    term.wait_for("Terminate enclave?")
    term.keys("y")
    term.wait_for("(0 running", timeout=60)  # "(0 running, 1 exited)"
    term.wait_for("nitro-emu terminate-enclave")

    term.keys("q")
    deadline = time.monotonic() + 20
    while "tui" in term.tmux("list-sessions") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "tui" not in term.tmux("list-sessions")
