"""Enclave console files: written by the supervisor, bounded, kept after the enclave ends; followed by `console`.

Path scheme: ``<home>/emulator/console/<enclave-id>.log`` (core.home.emulator_console_dir()). The file
keeps the last :data:`KEEP_BYTES` of output; when it grows past :data:`TRIM_AT` it is replaced by its
tail (a new inode), and followers notice the replacement and continue from the new file's start.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from core import home

KEEP_BYTES = 4 * 1024 * 1024
TRIM_AT = 5 * 1024 * 1024
POLL = 0.05
#: consoles of ended enclaves kept (newest first); with TRIM_AT per file this caps the folder
KEEP_ENDED = 64


def console_file(enclave_id: str) -> Path:
    return home.ensure(home.emulator_console_dir()) / f"{enclave_id}.log"


def prune_kept(live_ids: set[str], keep: int = KEEP_ENDED) -> None:
    """Delete the oldest console files of ended enclaves beyond ``keep``; never a live enclave's."""
    folder = home.emulator_console_dir()
    ended: list[tuple[float, Path]] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if not entry.name.endswith(".log") or entry.name[: -len(".log")] in live_ids:
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                ended.append((entry.stat(follow_symlinks=False).st_mtime, Path(entry.path)))
    ended.sort(reverse=True)
    for _, path in ended[keep:]:
        with contextlib.suppress(OSError):
            path.unlink()


class ConsoleWriter:
    """Copies the enclave's stdout/stderr pipe into the console file from a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: BinaryIO = open(path, "ab")  # noqa: SIM115 - lives as long as the enclave
        self._thread: threading.Thread | None = None

    def pump(self, fd: int) -> None:
        self._thread = threading.Thread(target=self._run, args=(fd,), name="console", daemon=True)
        self._thread.start()

    def _run(self, fd: int) -> None:
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                self._fh.write(chunk)
                self._fh.flush()
                if self._fh.tell() > TRIM_AT:
                    self._trim()
        except OSError:
            return
        finally:
            os.close(fd)

    def _trim(self) -> None:
        with open(self.path, "rb") as src:
            src.seek(-KEEP_BYTES, os.SEEK_END)
            tail = src.read()
        tmp = self.path.with_suffix(".trim")
        with open(tmp, "wb") as dst:
            dst.write(tail)
        os.replace(tmp, self.path)
        self._fh.close()
        self._fh = open(self.path, "ab")  # noqa: SIM115

    def close(self, wait: float = 2.0) -> None:
        if self._thread is not None:
            self._thread.join(wait)
        with contextlib.suppress(OSError):
            self._fh.close()


def follow(
    path: Path,
    alive: Callable[[], bool],
    out: BinaryIO | None = None,
    disconnect_timeout: float | None = None,
) -> None:
    """Write the file's content, then new content, until ``alive()`` is false and all is read, or timeout."""
    out = out or sys.stdout.buffer
    deadline = None if disconnect_timeout is None else time.monotonic() + disconnect_timeout
    fh = open(path, "rb")  # noqa: SIM115
    try:
        ino = os.fstat(fh.fileno()).st_ino
        while True:
            chunk = fh.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino != ino:
                    fh.close()
                    fh = open(path, "rb")  # noqa: SIM115
                    ino = os.fstat(fh.fileno()).st_ino
                    continue
            if not alive():
                # one last read: output written between the read above and the liveness check
                rest = fh.read()
                if rest:
                    out.write(rest)
                    out.flush()
                return
            time.sleep(POLL)
    finally:
        fh.close()
