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
#: how often a follower looks for new output: each look that finds some is one write to the reader (a
#: TUI repaints its console pane at most every 0.1 s anyway, so looking more often only costs CPU on both sides)
POLL = 0.1
#: consoles of ended enclaves kept (newest first); with TRIM_AT per file this caps the folder
KEEP_ENDED = 64


def console_file(enclave_id: str, *, create: bool = True) -> Path:
    """The enclave's console file; ``create``: its folder is made (the writer's side, not a reader's)."""
    folder = home.emulator_console_dir()
    return (home.ensure(folder) if create else folder) / f"{enclave_id}.log"


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
    """Copies the enclave's stdout/stderr pipe into the console file from a thread.

    The pipe is drained for as long as the enclave holds it open, whatever happens to the file: what
    cannot be stored (full disk, I/O error, file removed) is dropped and counted, never pushed back
    onto the enclave, whose next write would otherwise block or fail with EPIPE and take its
    service down (issue 9 item 8). When writing works again, one line in the console says how much
    was lost and why, so the file itself tells the gap.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dropped_bytes = 0
        self.last_error: str | None = None
        self._unreported = 0  # dropped since the last note in the file
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._thread: threading.Thread | None = None
        self._open()

    def _open(self) -> None:
        try:
            # unbuffered: a failed write leaves nothing behind in a buffer to fail again later
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self._fd = None
            self.last_error = exc.strerror or str(exc)

    def pump(self, fd: int) -> None:
        self._thread = threading.Thread(target=self._run, args=(fd,), name="console", daemon=True)
        self._thread.start()

    def _run(self, fd: int) -> None:
        try:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except InterruptedError:
                    continue
                except OSError:
                    return  # the pipe itself broke: nothing more can come from the enclave
                if not chunk:
                    return
                self.store(chunk)
        finally:
            os.close(fd)

    def store(self, chunk: bytes) -> None:
        """Append ``chunk``, or count it as dropped; never raises."""
        with self._lock:
            if self._fd is None:
                self._open()
            if self._fd is not None and self._unreported:
                note = (
                    f"\n[nitro-emu: {self._unreported} bytes of console output were dropped: "
                    f"{self.last_error}]\n"
                ).encode()
                if self._write_all(note) == len(note):
                    self._unreported = 0
            written = self._write_all(chunk) if self._fd is not None and not self._unreported else 0
            lost = len(chunk) - written
            if lost:
                self.dropped_bytes += lost
                self._unreported += lost
                return
            try:
                if os.fstat(self._fd).st_size > TRIM_AT:  # type: ignore[arg-type]
                    self._trim()
            except OSError as exc:
                self.last_error = f"trimming the console file failed: {exc.strerror or exc}"

    def _write_all(self, data: bytes) -> int:
        done = 0
        view = memoryview(data)
        while done < len(data):
            try:
                n = os.write(self._fd, view[done:])  # type: ignore[arg-type]
            except InterruptedError:
                continue
            except OSError as exc:
                self.last_error = exc.strerror or str(exc)
                return done
            if n <= 0:
                return done
            done += n
        return done

    def _trim(self) -> None:
        tmp = self.path.with_suffix(".trim")
        try:
            with open(self.path, "rb") as src:
                src.seek(-KEEP_BYTES, os.SEEK_END)
                tail = src.read()
            with open(tmp, "wb") as dst:
                dst.write(tail)
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        old, self._fd = self._fd, None
        if old is not None:
            with contextlib.suppress(OSError):
                os.close(old)
        self._open()

    def close(self, wait: float = 2.0) -> None:
        if self._thread is not None:
            self._thread.join(wait)
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None


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
