"""AF_UNIX paths that may be longer than the kernel's 108-byte sun_path.

Homes under pytest's tmp folders easily exceed the limit, so a long path is reached through
``/proc/self/fd/<dirfd>/<name>``: the kernel resolves it like any other path, and it is short.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_MAX = 100
_dir_fds: dict[str, int] = {}
_lock = threading.Lock()


def short_path(path: str | os.PathLike[str]) -> str:
    """A path for bind()/connect() that names the same socket and fits in sun_path."""
    text = os.fspath(path)
    if len(text.encode()) <= _MAX:
        return text
    parent, name = os.path.split(os.path.abspath(text))
    with _lock:
        fd = _dir_fds.get(parent)
        if fd is None:
            fd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            _dir_fds[parent] = fd
    short = f"/proc/self/fd/{fd}/{name}"
    if len(short.encode()) > _MAX:
        raise OSError(f"socket name too long even via /proc: {name!r}")
    return short


def forget_dirs() -> None:
    """Drop cached directory fds (after fork the child may want fresh ones)."""
    with _lock:
        for fd in _dir_fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        _dir_fds.clear()


def remove_stale(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
