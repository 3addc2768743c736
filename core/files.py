"""Operator-named files: reading them bounded and never blocking, writing them without replacing
what is not ours.

Reading: every input path is opened with O_NONBLOCK and checked with fstat before a byte is read,
so a FIFO, a terminal or a device named as input is refused at once instead of blocking a reader.

Writing: an output goes to an unnamed temp file (O_TMPFILE) or, where the filesystem has none, to a
temp file whose name says who made it (``.<name>.nd-tmp.<pid>.<random>``) so a later run can remove
what a killed one left; it is renamed over the target only at the end. A target that exists and is
not a regular file (``/dev/null``, a FIFO, a symlink, a folder) is refused: renaming over it would
replace something that is not ours.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from core.errors import InputTooLarge, NitrodeckError, UsageError

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
    stat.S_IFLNK: "a symbolic link",
}


def kind_of(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


class NotRegularFile(UsageError):
    """An input or output path names a FIFO, device, socket, folder (or, for outputs, a symlink)."""

    code = "ND-NOT-REGULAR"


def open_regular(path: str | Path, where: str | None = None) -> int:
    """A read-only descriptor of a regular file; never blocks on a FIFO or device (refused, typed).

    The caller closes the descriptor. ``where`` names the flag or field the path came from.
    """
    text = str(path)
    where = where or text
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot read {text}: {exc.strerror or exc}", where=where) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(
                f"{text} is {kind_of(st.st_mode)}, not a regular file",
                where=where,
                hint="give the path of a regular file",
            )
        # regular files ignore O_NONBLOCK, but clear it so nothing downstream sees EAGAIN semantics
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_limited(path: str | Path, limit: int, where: str | None = None) -> bytes:
    """The whole file, refusing (typed) anything unreadable, not regular, or over ``limit`` bytes.

    Reads at most ``limit + 1`` bytes, so an oversized file never costs more than that.
    ``where`` names the flag or field the path came from (default: the path itself).
    """
    path = Path(path).expanduser()
    where = where or str(path)
    fd = open_regular(path, where)
    try:
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}", where=where) from exc
    if len(data) > limit:
        raise InputTooLarge(f"{path} is larger than {limit} bytes", where=where)
    return data


# --- outputs --------------------------------------------------------------------------------------

_TMP_TAG = ".nd-tmp."


class OutputBusy(NitrodeckError):
    """Another nitrodeck process is writing the same output right now."""

    code = "ND-OUTPUT-BUSY"


def check_output_target(path: str | Path, where: str | None = None) -> Path:
    """Refuse an output path that exists and is not a regular file (typed); returns it absolute."""
    target = Path(path).expanduser().absolute()
    where = where or str(target)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise UsageError(f"cannot inspect {target}: {exc.strerror or exc}", where=where) from exc
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(
            f"{target} exists and is {kind_of(st.st_mode)}: refusing to replace it",
            where=where,
            hint="choose another output path, or remove it first if it really is yours",
        )
    return target


def _tmp_pattern(name: str) -> re.Pattern[str]:
    return re.compile(re.escape(f".{name}{_TMP_TAG}") + r"(\d+)\.[0-9a-f]+$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (ours or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(target: Path) -> list[Path]:
    """Remove temp files a killed writer of ``target`` left (their PID is no longer alive)."""
    removed: list[Path] = []
    pattern = _tmp_pattern(target.name)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return removed
    uid = os.geteuid()
    for name in names:
        match = pattern.match(name)
        if not match or pid_alive(int(match.group(1))):
            continue
        stale = target.parent / name
        with contextlib.suppress(OSError):
            st = os.lstat(stale)
            if stat.S_ISREG(st.st_mode) and st.st_uid == uid:
                stale.unlink()
                removed.append(stale)
    return removed


def _tmp_name(target: Path) -> Path:
    import secrets  # (with hashlib below: loaded by commands that write files, not by every reader)

    return target.with_name(f".{target.name}{_TMP_TAG}{os.getpid()}.{secrets.token_hex(6)}")


def _link_fd(fd: int, name: Path) -> None:
    """Give an O_TMPFILE file a name: linkat through /proc/self/fd with AT_SYMLINK_FOLLOW (os.link
    uses plain link(2), which does not follow, unless a directory descriptor is given)."""
    proc_fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(fd), name, src_dir_fd=proc_fd, follow_symlinks=True)
    finally:
        os.close(proc_fd)


class AtomicOutput:
    """An output being written: ``fh`` (read/write, positioned at 0) until :meth:`publish`."""

    def __init__(self, target: Path, mode: int, where: str) -> None:
        self.target = target
        self.mode = mode
        self.where = where
        self._named: Path | None = None
        fd: int | None = None
        tmpfile = getattr(os, "O_TMPFILE", 0)
        if tmpfile:
            try:
                # an unnamed file: if we are killed, the kernel frees it and nothing is left behind
                fd = os.open(target.parent, tmpfile | os.O_RDWR | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                    raise
                fd = None
        if fd is None:
            self._named = _tmp_name(target)
            fd = os.open(self._named, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.fh: BinaryIO = os.fdopen(fd, "w+b")
        self.published = False

    def publish(self) -> None:
        """fsync, then rename over the target (which is re-checked to still be ours to replace)."""
        self.fh.flush()
        os.fsync(self.fh.fileno())
        os.fchmod(self.fh.fileno(), self.mode)
        check_output_target(self.target, self.where)
        if self._named is None:
            named = _tmp_name(self.target)
            _link_fd(self.fh.fileno(), named)
            self._named = named
        os.replace(self._named, self.target)
        self._named = None
        self.published = True

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()
        if self._named is not None:
            with contextlib.suppress(OSError):
                self._named.unlink()
            self._named = None


def default_lock_dir() -> Path:
    """This user's private folder of output locks (in the temp folder, shared by every home)."""
    import tempfile

    folder = Path(tempfile.gettempdir()) / f"nitrodeck-locks-{os.geteuid()}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise UsageError(
            f"{folder} is not a private folder of this user: refusing to keep locks there",
            where=str(folder),
            hint="remove it (someone else made it) or set TMPDIR",
        )
    return folder


@contextlib.contextmanager
def output_lock(target: Path, lock_dir: Path | None = None) -> Iterator[None]:
    """Hold an exclusive lock on one output path (not its folder) or fail at once (typed).

    Locks live in ``lock_dir`` (default: :func:`default_lock_dir`), named by a digest of the
    target's folder identity and name, so nothing is added next to the operator's files.
    """
    lock_dir = lock_dir or default_lock_dir()
    try:
        st = os.stat(target.parent)
        key = f"{st.st_dev}:{st.st_ino}/{target.name}"
    except OSError:
        key = str(target)
    import hashlib

    lock_path = lock_dir / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusy(
                f"another nitrodeck process is writing {target} right now",
                where=str(target),
                hint="wait for it to finish, or write to another path",
            ) from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(
    path: str | Path,
    *,
    mode: int = 0o644,
    where: str | None = None,
    lock: bool = False,
) -> Iterator[AtomicOutput]:
    """Write ``path`` all at once: the body writes ``out.fh``; on a normal exit it is published.

    Refuses a target that is not a regular file, removes what killed writers of the same target
    left, and with ``lock`` refuses a second concurrent writer of the same target (:func:`output_lock`).
    """
    target = check_output_target(path, where)
    where = where or str(target)
    held = output_lock(target) if lock else contextlib.nullcontext()
    with held:
        clean_stale_temps(target)
        out = AtomicOutput(target, mode, where)
        try:
            yield out
            if not out.published:
                out.publish()
        finally:
            out.discard()


def write_atomic(
    path: str | Path, data: bytes, *, mode: int = 0o600, where: str | None = None, lock: bool = False
) -> Path:
    """Small outputs (ciphertexts, pins): all of ``data`` or nothing, never over a non-regular file."""
    with atomic_output(path, mode=mode, where=where, lock=lock) as out:
        out.fh.write(data)
    return out.target
