"""Learn of enclave changes from the kernel instead of a timer.

nitro-cli keeps one Unix socket per running enclave in its sockets folder (``/run/nitro_enclaves``,
or ``$NITRO_CLI_SOCKETS_PATH``); the emulator replaces its enclave table and control sockets in its
run folder. Either way a launch, an exit or a terminate by anyone creates, removes or renames a file
in a folder the backend names (``Backend.watch_dirs()``), so inotify on those folders says *when* to
run ``describe-enclaves``, and nothing runs while nothing changes.

A folder that does not exist yet (or is deleted and made again, as the allocator service and the
emulator do) is watched through its nearest existing parent until it appears. Where inotify is not
available the watcher falls back to comparing the folders' listings once a second, which still costs
no subprocess.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import struct
import threading
import time
from pathlib import Path

# <sys/inotify.h>
IN_MODIFY = 0x0002
IN_ATTRIB = 0x0004
IN_CLOSE_WRITE = 0x0008
IN_MOVED_FROM = 0x0040
IN_MOVED_TO = 0x0080
IN_CREATE = 0x0100
IN_DELETE = 0x0200
IN_DELETE_SELF = 0x0400
IN_MOVE_SELF = 0x0800
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

#: what a change of the enclave set looks like in a folder: files appear, vanish or are renamed into
#: place (nitro-cli's sockets; the emulator's table is replaced by a rename). Not IN_CLOSE_WRITE: every
#: describe closes the lock file it opened for writing, and a describe must not wake the next one.
DIR_EVENTS = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
SELF_EVENTS = IN_DELETE_SELF | IN_MOVE_SELF
_EVENT = struct.Struct("iIII")
#: events arriving this close together are one change (a launch writes several files)
DEBOUNCE_S = 0.03
FALLBACK_POLL_S = 1.0
#: how often whoever watches (the dashboard, the agent, `events --follow`) runs describe-enclaves even
#: though nothing changed: a safety net for a change the folders did not show
SAFETY_POLL_S = 30.0


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1  # noqa: B018 - raises AttributeError where there is no inotify
        return libc
    except (OSError, AttributeError):
        return None


class DirWatcher:
    """Blocks in :meth:`wait` until something changes in one of ``dirs`` (or a timeout passes)."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = [Path(d) for d in dirs]
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._fd = -1
        self._libc = _libc()
        #: watch descriptor -> (folder, is it one of ours or a parent standing in for a missing one)
        self._watches: dict[int, tuple[Path, bool]] = {}
        self._listing: tuple[object, ...] = ()
        # close() may come from another thread while one waits: the waiter releases the descriptors
        # itself, so that select() never sees a number the process has meanwhile reused for a socket
        # that stays quiet (which hung an app's shutdown on its watch thread)
        self._lock = threading.Lock()
        self._closed = False
        self._waiters = 0
        if self._libc is not None:
            fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd >= 0:
                self._fd = fd
        if self._fd >= 0:
            self._arm_all()
        else:
            self._listing = self._snapshot()

    @property
    def uses_inotify(self) -> bool:
        return self._fd >= 0

    # -- arming

    def _add(self, path: Path, mask: int) -> int:
        assert self._libc is not None
        wd = int(self._libc.inotify_add_watch(self._fd, os.fsencode(path), mask | IN_ONLYDIR))
        if wd < 0:
            err = ctypes.get_errno()
            if err not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                raise OSError(err, os.strerror(err), str(path))
        return wd

    def _arm_all(self) -> None:
        """Watch every folder that exists, and the nearest existing parent of each that does not."""
        armed = {path for path, _ in self._watches.values()}
        for folder in self.dirs:
            if folder in armed:
                continue
            wd = self._add(folder, DIR_EVENTS | SELF_EVENTS)
            if wd >= 0:
                self._watches[wd] = (folder, True)
                continue
            parent = folder.parent
            while parent != parent.parent and not parent.is_dir():
                parent = parent.parent
            if parent not in armed:
                wd = self._add(parent, IN_CREATE | IN_MOVED_TO | SELF_EVENTS)
                if wd >= 0:
                    self._watches[wd] = (parent, False)
                    armed.add(parent)

    # -- waiting

    def wait(self, timeout: float | None) -> bool:
        """True when something changed (or a watched folder appeared or vanished); False on timeout or
        after :meth:`close`."""
        with self._lock:
            if self._closed:
                if not self._waiters:
                    self._release()
                return False
            self._waiters += 1
        try:
            if self._fd < 0:
                return self._wait_polling(timeout)
            return self._wait_inotify(timeout)
        finally:
            with self._lock:
                self._waiters -= 1
                if self._closed and not self._waiters:
                    self._release()

    def _wait_inotify(self, timeout: float | None) -> bool:
        try:
            ready, _, _ = select.select([self._fd, self._wake_r], [], [], timeout)
        except (OSError, ValueError):
            return False  # closed under us
        if self._wake_r in ready or self._fd not in ready:
            return False
        changed = self._drain()
        # a launch or an exit is several file operations: take them as one change
        deadline = time.monotonic() + DEBOUNCE_S
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self._fd, self._wake_r], [], [], left)
            if not ready or self._wake_r in ready:
                break
            changed = self._drain() or changed
        return changed

    def _drain(self) -> bool:
        changed = False
        rearm = False
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                break
            except OSError:
                return changed
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                folder, ours = self._watches.get(wd, (None, False))
                if mask & IN_IGNORED or mask & SELF_EVENTS:
                    # the folder went away: watch for it to come back
                    self._watches.pop(wd, None)
                    changed = changed or ours
                    rearm = True
                elif ours:
                    changed = True
                elif folder is not None:
                    rearm = True  # something appeared in a parent: maybe the folder we wait for
        if rearm:
            before = {p for p, ours in self._watches.values() if ours}
            self._arm_all()
            after = {p for p, ours in self._watches.values() if ours}
            changed = changed or after != before
        return changed

    # -- without inotify

    def _snapshot(self) -> tuple[object, ...]:
        out: list[object] = []
        for folder in self.dirs:
            try:
                with os.scandir(folder) as it:
                    out.append(tuple(sorted((e.name, e.inode(), e.stat(follow_symlinks=False).st_mtime_ns) for e in it)))
            except OSError:
                out.append(None)
        return tuple(out)

    def _wait_polling(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = FALLBACK_POLL_S if deadline is None else min(FALLBACK_POLL_S, deadline - time.monotonic())
            if step <= 0:
                return False
            ready, _, _ = select.select([self._wake_r], [], [], step)
            if ready:
                return False
            now = self._snapshot()
            if now != self._listing:
                self._listing = now
                return True

    def close(self) -> None:
        """Wake a waiting thread (its wait returns False, and so does every later one) and release the
        descriptors: now if nobody waits, else when the waiter returns."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # the byte is never read: the pipe stays readable, so no later select() can block
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
            if not self._waiters:
                self._release()

    def _release(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = -1
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> DirWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
