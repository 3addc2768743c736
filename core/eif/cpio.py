"""cpio "newc" (070701) archives: a byte-reproducible writer and a defensive reader/extractor.

Ramdisks in an EIF are newc archives. The writer makes the same bytes from the same logical tree
whatever the host did: entries sorted by name, mtime fixed, uid/gid 0, inode numbers assigned by
position, one link per entry (hard links become copies). The reader treats archives as hostile:
bounded names, sizes and entry counts, no ``..``/absolute names, never writes through a symlink,
refuses symlinks that climb out of the tree, and skips device nodes.
"""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import re
import stat
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from core.errors import NitrodeckError

MAGIC = b"070701"
HEADER_SIZE = 110
TRAILER = "TRAILER!!!"
MAX_NAME = 4096
MAX_ENTRIES = 200_000
MAX_FILE_SIZE = 4 * 1024**3
MAX_TOTAL_SIZE = 16 * 1024**3
COPY_CHUNK = 1024 * 1024


class CpioError(NitrodeckError):
    code = "ND-CPIO"

    def __init__(self, message: str, *, offset: int | None = None, name: str | None = None) -> None:
        where = (
            f"cpio entry {name!r}" if name else (f"cpio offset 0x{offset:x}" if offset is not None else None)
        )
        super().__init__(message, where=where)
        self.offset = offset
        self.name = name


@dataclass(frozen=True)
class CpioEntry:
    """One archive member. ``source`` is the file content (bytes, or the path of a file streamed at write
    time); for a symlink it is the target."""

    name: str
    mode: int  # full st_mode: type bits + permissions
    source: bytes | Path | str = b""
    rdev: int = 0
    #: a file's size as the walk saw it (tree_entries); None: asked of the file when it is written
    length: int | None = None

    @property
    def size(self) -> int:
        if isinstance(self.source, bytes):
            return len(self.source)
        if self.length is not None:
            return self.length
        return os.stat(self.source).st_size


def directory(name: str, perm: int = 0o755) -> CpioEntry:
    return CpioEntry(name, stat.S_IFDIR | perm)


def regular(name: str, source: bytes | Path, perm: int = 0o644) -> CpioEntry:
    return CpioEntry(name, stat.S_IFREG | perm, source)


def symlink(name: str, target: str) -> CpioEntry:
    return CpioEntry(name, stat.S_IFLNK | 0o777, target.encode())


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


_HEADER_FORMAT = MAGIC + b"%08X" * 13


def _header(ino: int, mode: int, nlink: int, mtime: int, size: int, rdev: int, namesize: int) -> bytes:
    return _HEADER_FORMAT % (ino, mode, 0, 0, nlink, mtime, size, 0, 0, os.major(rdev), os.minor(rdev), namesize, 0)


@dataclass
class CpioWriter:
    """Streams entries to ``out``. Use :func:`write_archive` for sorted, reproducible output."""

    out: BinaryIO
    mtime: int = 0
    written: int = 0
    _ino: int = 0

    def _emit(self, data: bytes) -> None:
        self.out.write(data)
        self.written += len(data)

    def add(self, entry: CpioEntry) -> None:
        name = entry.name.encode()
        if b"\0" in name or len(name) > MAX_NAME:
            raise CpioError("entry name has a NUL byte or is too long", name=entry.name)
        self._ino += 1
        is_dir = stat.S_ISDIR(entry.mode)
        size = 0 if is_dir else entry.size
        header = _header(
            self._ino, entry.mode, 2 if is_dir else 1, self.mtime, size, entry.rdev, len(name) + 1
        )
        self._emit(header + name + b"\0" + b"\0" * _pad(HEADER_SIZE + len(name) + 1))
        if is_dir:
            return
        if isinstance(entry.source, bytes):
            self._emit(entry.source)
        else:
            copied = 0
            with open(entry.source, "rb") as fh:
                while copied < size:
                    block = fh.read(min(COPY_CHUNK, size - copied))
                    if not block:
                        break
                    self._emit(block)
                    copied += len(block)
            if copied != size:
                raise CpioError(f"{entry.source} changed size while archiving", name=entry.name)
        self._emit(b"\0" * _pad(size))

    def finish(self) -> None:
        self._ino += 1
        name = TRAILER.encode()
        self._emit(_header(0, 0, 1, 0, 0, 0, len(name) + 1) + name + b"\0")
        self._emit(b"\0" * _pad(HEADER_SIZE + len(name) + 1))


def write_archive(out: BinaryIO, entries: Iterable[CpioEntry], mtime: int = 0) -> int:
    """Write a reproducible archive: entries sorted by name; returns the bytes written."""
    ordered = sorted(entries, key=lambda e: e.name.encode())
    if len(ordered) > MAX_ENTRIES:
        raise CpioError(f"{len(ordered)} entries, more than the {MAX_ENTRIES} limit")
    seen: set[str] = set()
    writer = CpioWriter(out, mtime=mtime)
    for entry in ordered:
        if entry.name in seen:
            raise CpioError("duplicate entry", name=entry.name)
        seen.add(entry.name)
        writer.add(entry)
    writer.finish()
    return writer.written


class Sink(Protocol):
    """Where :func:`stream_archive` writes (core.eif.stream.DigestingWriter)."""

    def write(self, data: bytes) -> None: ...

    def copy_from(self, fd: int, size: int) -> int: ...


def plan_archive(entries: Iterable[CpioEntry]) -> tuple[list[CpioEntry], int]:
    """The entries in archive order, checked as :func:`write_archive` checks them, and the exact size
    of the archive :func:`stream_archive` will write from them: known before a byte is written, so the
    archive can be streamed into its place in an EIF whose header gives its size."""
    ordered = sorted(entries, key=lambda e: e.name.encode())
    if len(ordered) > MAX_ENTRIES:
        raise CpioError(f"{len(ordered)} entries, more than the {MAX_ENTRIES} limit")
    total = 0
    previous: str | None = None
    for entry in ordered:
        if entry.name == previous:
            raise CpioError("duplicate entry", name=entry.name)
        previous = entry.name
        name = entry.name.encode()
        if b"\0" in name or len(name) > MAX_NAME:
            raise CpioError("entry name has a NUL byte or is too long", name=entry.name)
        size = 0 if stat.S_ISDIR(entry.mode) else entry.size
        total += HEADER_SIZE + len(name) + 1 + _pad(HEADER_SIZE + len(name) + 1) + size + _pad(size)
    trailer = len(TRAILER) + 1
    return ordered, total + HEADER_SIZE + trailer + _pad(HEADER_SIZE + trailer)


def stream_archive(out: Sink, ordered: list[CpioEntry], mtime: int = 0) -> None:
    """Write :func:`plan_archive`'s entries: the same bytes :func:`write_archive` writes, with file
    contents read straight into ``out``'s buffers. A file that is not the size it was planned at is
    refused (the archive's size is already in the EIF's header)."""
    zeros = b"\0\0\0\0"
    tail = b""  # the previous file's padding, written with the next header (one write per entry)
    for ino, entry in enumerate(ordered, start=1):
        name = entry.name.encode()
        is_dir = stat.S_ISDIR(entry.mode)
        source = entry.source
        size = 0 if is_dir else entry.size
        namesize = len(name) + 1
        head = (
            tail
            + _header(ino, entry.mode, 2 if is_dir else 1, mtime, size, entry.rdev, namesize)
            + name
            + zeros[: 1 + _pad(HEADER_SIZE + namesize)]
        )
        tail = zeros[: _pad(size)]
        if is_dir:
            out.write(head)
            tail = b""
        elif isinstance(source, bytes):
            out.write(head + source)
        else:
            out.write(head)
            fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
            try:
                copied = out.copy_from(fd, size)
            finally:
                os.close(fd)
            if copied != size:
                raise CpioError(f"{source} changed size while archiving", name=entry.name)
    name = TRAILER.encode()
    out.write(tail + _header(0, 0, 1, 0, 0, 0, len(name) + 1) + name + zeros[: 1 + _pad(HEADER_SIZE + len(name) + 1)])


def tree_entries(root: Path, prefix: str, root_perm: int = 0o755) -> Iterator[CpioEntry]:
    """Entries for a folder tree, named ``prefix/relative``; host owner and times are dropped.

    Permissions are kept (an executable must stay executable), except the top folder's, which is
    fixed: temp folders are often 0700 and would make otherwise equal trees differ. Sockets and
    fifos are skipped; device nodes are kept only as their numbers. A file's entry carries its path
    (a string: a Path per file cost more than the rest of the walk) and the size the walk saw.

    The walk is os.walk's (top-down, sorted, symlinked folders not entered, a folder that cannot be
    listed skipped) with one lstat per entry, from os.scandir."""
    yield directory(prefix, root_perm)
    base = str(root)
    pending = [(base, "")]  # (folder, its path relative to root); depth first, in name order
    while pending:
        folder, rel_dir = pending.pop()
        try:
            with os.scandir(folder) as listing:
                found = sorted(listing, key=lambda e: e.name)
        except OSError:
            continue
        subfolders = []
        for item in found:
            name = item.name
            full = name if folder == "." else item.path
            rel = f"{rel_dir}/{name}" if rel_dir else name
            arc = f"{prefix}/{rel}"
            st = item.stat(follow_symlinks=False)
            mode = st.st_mode
            perm = stat.S_IMODE(mode)
            if stat.S_ISLNK(mode):
                target = os.readlink(full)
                if not _link_stays_inside(rel, target):
                    # the extractor would refuse it later; say so while the author can still fix it
                    raise CpioError(f"symlink to {target!r} points outside the tree", name=arc)
                yield symlink(arc, target)
            elif stat.S_ISDIR(mode):
                yield directory(arc, perm)
                subfolders.append((full, rel))
            elif stat.S_ISREG(mode):
                yield CpioEntry(arc, stat.S_IFREG | perm, full, length=st.st_size)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                yield CpioEntry(arc, stat.S_IFMT(mode) | perm, b"", st.st_rdev)
        pending.extend(reversed(subfolders))


_HEX_FIELDS = re.compile(rb"[0-9A-Fa-f]{104}")

# --- reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpioMember:
    name: str
    mode: int
    size: int
    offset: int  # of the data, in the (decompressed) stream
    rdev: int = 0

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


class _Counted:
    """A read-only stream wrapper that counts bytes and refuses to run past ``limit``."""

    def __init__(self, raw: BinaryIO, limit: int) -> None:
        self.raw = raw
        self.limit = limit
        self.pos = 0

    def read_exact(self, n: int, what: str) -> bytes:
        if self.pos + n > self.limit:
            raise CpioError(f"archive ends inside {what}", offset=self.pos)
        try:
            data = self.raw.read(n)
        except (OSError, EOFError, zlib.error) as exc:  # corrupt gzip stream
            raise CpioError(f"compressed archive is corrupt: {exc}", offset=self.pos) from None
        if len(data) != n:
            raise CpioError(f"archive ends inside {what}", offset=self.pos)
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        left = n
        while left:
            left -= len(self.read_exact(min(COPY_CHUNK, left), what))


def _maybe_gunzip(stream: BinaryIO) -> BinaryIO:
    """Ramdisks may be cpio.gz (linuxkit writes gzip): peek at the first bytes."""
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(stream)  # type: ignore[arg-type,type-var]
    try:
        head = buffered.peek(2)[:2]
    except OSError as exc:
        raise CpioError(f"cannot read archive: {exc}", offset=0) from None
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    return buffered  # type: ignore[return-value]


@dataclass
class CpioReader:
    """Iterates members of a newc stream. Each member's data must be consumed (or skipped) before
    the next; :meth:`members` does the skipping for you."""

    stream: BinaryIO
    max_total: int = MAX_TOTAL_SIZE
    max_entries: int = MAX_ENTRIES
    max_file: int = MAX_FILE_SIZE
    _in: _Counted = field(init=False)

    def __post_init__(self) -> None:
        self._in = _Counted(_maybe_gunzip(self.stream), self.max_total)

    def _next_header(self) -> CpioMember | None:
        start = self._in.pos
        raw = self._in.read_exact(HEADER_SIZE, "an entry header")
        if raw[:6] != MAGIC:
            raise CpioError(f"bad entry magic {raw[:6]!r}, expected {MAGIC!r} (newc)", offset=start)
        # exactly 8 hex digits per field: int(..., 16) alone also takes signs, spaces and underscores
        # ("-0000001" is -1), which then overflow os.makedev or make a negative size
        if not _HEX_FIELDS.fullmatch(raw[6:HEADER_SIZE]):
            raise CpioError("entry header has non-hex fields", offset=start)
        values = [int(raw[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        _ino, mode, _uid, _gid, _nlink, _mtime, size, _maj, _min, rmaj, rmin, namesize, _check = values
        if namesize < 1 or namesize > MAX_NAME + 1:
            raise CpioError(f"entry name size {namesize} out of range 1..{MAX_NAME + 1}", offset=start)
        name_raw = self._in.read_exact(namesize, "an entry name")
        self._in.skip(_pad(HEADER_SIZE + namesize), "name padding")
        if name_raw[-1:] != b"\0":
            raise CpioError("entry name is not NUL-terminated", offset=start)
        try:
            name = name_raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CpioError("entry name is not UTF-8", offset=start) from exc
        if name == TRAILER:
            return None
        if size > self.max_file:
            raise CpioError(f"entry is {size} bytes, over the {self.max_file}-byte limit", name=name)
        # device numbers are 32-bit fields, but Linux majors are 12 bits and minors 20: anything
        # larger cannot be a device on this host (os.makedev would overflow)
        if rmaj > 0xFFF or rmin > 0xFFFFF:
            raise CpioError(f"device number {rmaj}:{rmin} is out of range", name=name)
        return CpioMember(name, mode, size, self._in.pos, os.makedev(rmaj, rmin))

    def members(self) -> Iterator[tuple[CpioMember, _Counted]]:
        """Yield (member, stream); the caller may read ``member.size`` bytes via ``read_data``."""
        count = 0
        while True:  # bounded: every entry consumes >= 110 bytes of a max_total-limited stream
            member = self._next_header()
            if member is None:
                return
            count += 1
            if count > self.max_entries:
                raise CpioError(f"more than {self.max_entries} entries", offset=self._in.pos)
            start = self._in.pos
            yield member, self._in
            consumed = self._in.pos - start
            if consumed > member.size:
                raise CpioError("reader consumed past the entry", name=member.name)
            self._in.skip(member.size - consumed, "entry data")
            self._in.skip(_pad(member.size), "data padding")

    def read_data(self, member: CpioMember, limit: int) -> bytes:
        if member.size > limit:
            raise CpioError(f"entry is {member.size} bytes, over the {limit}-byte limit", name=member.name)
        return self._in.read_exact(member.size, "entry data")


def list_members(stream: BinaryIO) -> list[CpioMember]:
    return [m for m, _ in CpioReader(stream).members()]


def safe_name(name: str) -> str:
    """Normalise an archive name to a relative path, refusing absolute paths, ``..`` and NUL bytes."""
    if "\0" in name:  # namesize counts one terminating NUL; one inside cannot be a path on the host
        raise CpioError("NUL byte inside an archive name", name=name)
    if name.startswith("/"):
        raise CpioError("absolute path in archive", name=name)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise CpioError("path traversal ('..') in archive", name=name)
    return "/".join(parts)


def _link_stays_inside(rel_name: str, target: str) -> bool:
    """Absolute targets resolve inside the extracted root (as they will inside the enclave);
    relative ones must not climb above it."""
    if target.startswith("/"):
        return True
    base = posixpath.dirname(rel_name)
    depth = 0 if not base else len(base.split("/"))
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in ("", "."):
            depth += 1
    return True


def _check_parents(dest: Path, rel: str, name: str) -> None:
    """No parent of the entry may be a symlink: writing through one could land outside ``dest``."""
    cur = dest
    for part in rel.split("/")[:-1]:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise CpioError("entry would be written through a symlink (escape)", name=name)
        if not stat.S_ISDIR(st.st_mode):
            raise CpioError("a parent of this entry is not a folder", name=name)


@dataclass
class ExtractResult:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    skipped: list[str] = field(default_factory=list)
    total_bytes: int = 0


def extract(
    stream: BinaryIO, dest: Path, *, max_total: int = MAX_TOTAL_SIZE, only_prefix: str | None = None
) -> ExtractResult:
    """Unpack a newc stream under ``dest``. Device nodes, fifos and sockets are skipped (listed)."""
    dest.mkdir(parents=True, exist_ok=True)
    result = ExtractResult()
    reader = CpioReader(stream, max_total=max_total)
    for member, src in reader.members():
        rel = safe_name(member.name)
        if not rel:
            continue
        if only_prefix is not None and not (rel == only_prefix or rel.startswith(only_prefix + "/")):
            continue
        _check_parents(dest, rel, member.name)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        perm = stat.S_IMODE(member.mode) & 0o7777 & ~0o6000  # no setuid/setgid bits on the host
        if member.is_dir:
            if target.is_symlink():
                raise CpioError("folder entry replaces a symlink (escape)", name=member.name)
            target.mkdir(exist_ok=True)
            os.chmod(target, perm | 0o700)
            result.dirs += 1
        elif member.is_symlink:
            link = reader.read_data(member, MAX_NAME).decode("utf-8", "surrogateescape")
            if not link or "\0" in link:
                # the kernel takes a target up to its first NUL, and refuses an empty one
                raise CpioError("symlink with an empty target or a NUL byte in it", name=member.name)
            if not _link_stays_inside(rel, link):
                raise CpioError(f"symlink to {link!r} points outside the archive root", name=member.name)
            if target.is_symlink() or target.exists():
                if target.is_dir() and not target.is_symlink():
                    raise CpioError("symlink entry replaces a folder", name=member.name)
                target.unlink()
            os.symlink(link, target)
            result.symlinks += 1
        elif member.is_file:
            if target.is_symlink():
                target.unlink()  # never write through a link
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                left = member.size
                while left:
                    block = src.read_exact(min(COPY_CHUNK, left), "entry data")
                    out.write(block)
                    left -= len(block)
            os.chmod(target, perm)
            result.files += 1
            result.total_bytes += member.size
        else:
            result.skipped.append(rel)
    return result
