"""Issue 9 item 8: output that cannot be stored is dropped and counted, never pushed back onto the
enclave; the payload never fails a request because a log line could not be written."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

import pytest

from emulator.console import ConsoleWriter
from enclave_app.console_log import ConsoleLog, never_raises


def test_console_writer_drains_the_pipe_when_the_file_is_full() -> None:
    # /dev/full answers every write with ENOSPC: a console file on a full disk
    writer = ConsoleWriter(Path("/dev/full"))
    read_end, write_end = os.pipe()
    writer.pump(read_end)
    line = b"x" * 1000 + b"\n"
    # far more than a pipe buffer (64 KiB): if the writer stopped draining, this would block or EPIPE
    for _ in range(1000):
        assert os.write(write_end, line) == len(line)
    os.close(write_end)
    writer.close(wait=10)
    assert writer.dropped_bytes == 1000 * len(line)
    assert writer.last_error == os.strerror(28)


def test_console_writer_notes_the_gap_once_space_is_back(tmp_path: Path) -> None:
    path = tmp_path / "enc.log"
    writer = ConsoleWriter(path)
    writer.store(b"first\n")
    # simulate a full disk for one chunk: the descriptor points at /dev/full for a moment
    real = writer._fd
    writer._fd = os.open("/dev/full", os.O_WRONLY)
    writer.store(b"lost line\n")
    assert writer.dropped_bytes == len(b"lost line\n")
    os.close(writer._fd)
    writer._fd = real
    writer.store(b"after\n")
    writer.close()
    text = path.read_text()
    assert text.startswith("first\n")
    assert "lost line" not in text
    assert "[nitro-emu: 10 bytes of console output were dropped: No space left on device]" in text
    assert text.endswith("after\n")


def test_payload_log_survives_a_broken_console(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads the console any more: every write is EPIPE
    broken = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", broken)
    log = ConsoleLog()
    for i in range(3):
        log(f"request {i}")  # must not raise BrokenPipeError
    assert log.dropped == 3 and log.last_error == os.strerror(32)
    read2, write2 = os.pipe()
    monkeypatch.setattr(sys, "stdout", os.fdopen(write2, "w"))
    log("back")
    os.close(write2)
    got = os.read(read2, 4096).decode()
    assert "3 log line(s) dropped (Broken pipe)" in got and got.rstrip().endswith("nitrodeck-enclave: back")
    with contextlib.suppress(OSError):
        broken.close()


def test_a_failing_logger_never_fails_the_caller() -> None:
    calls = []

    def bad(message: str) -> None:
        calls.append(message)
        raise BrokenPipeError(32, "Broken pipe")

    safe = never_raises(bad)
    safe("x")
    assert calls == ["x"] and never_raises(safe) is safe


def test_concurrent_log_lines_stay_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = open(tmp_path / "out", "w")  # noqa: SIM115
    monkeypatch.setattr(sys, "stdout", out)
    log = ConsoleLog()
    threads = [threading.Thread(target=lambda n=n: [log(f"t{n} line {i}") for i in range(200)]) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.close()
    lines = (tmp_path / "out").read_text().splitlines()
    assert len(lines) == 800 and all(" nitrodeck-enclave: t" in line for line in lines)


def test_error_block_says_what_happened_when_the_err_log_cannot_be_written(nd_home: Path) -> None:
    from emulator.errors import EmuError
    from emulator.logs import error_block, write_err_log

    (nd_home / "emulator").mkdir(parents=True, exist_ok=True)
    (nd_home / "emulator" / "log").write_text("not a folder")  # every err log write fails
    err = EmuError(code="E36", subactions=["the enclave's init exited with status 127"])
    path = write_err_log(err, "Run Enclave")
    block = error_block(err, path)
    assert not path.exists()
    assert block.startswith("[ E36 ] ")
    assert "The error log could not be written" in block and "please provide the error log" not in block
    assert "Action: Run Enclave" in block and "exited with status 127" in block
