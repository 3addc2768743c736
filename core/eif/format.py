"""Enclave Image File (EIF) v4: read, validate and write, byte-compatible with nitro-cli.

Layout (all big-endian): a 548-byte header (magic, version, flags, default memory/cpus, section
table of 32 offsets + 32 sizes, CRC32), then sections, each a 12-byte header (type, flags, size)
followed by its data. The CRC (zlib crc32) covers header[0:544], then every section header + data
in file order.

The reader treats the file as hostile: every offset and size is checked against the file size
before anything is read, so a lying header can never make it allocate more than the file holds.
A CRC mismatch is reported (``crc_ok=False``), not raised: describe-eif shows ``CheckCRC: false``.
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import struct
import weakref
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO

from core.errors import NitrodeckError
from core.files import AtomicOutput, atomic_output, kind_of

MAGIC = b".eif"
VERSION = 4
HEADER_FORMAT = ">4sHHQQHH32Q32QII"
HEADER_SIZE = struct.calcsize(HEADER_FORMAT)  # 548
CRC_COVERED = HEADER_SIZE - 4  # the CRC field itself is excluded
SECTION_HEADER_FORMAT = ">HHQ"
SECTION_HEADER_SIZE = struct.calcsize(SECTION_HEADER_FORMAT)  # 12
MIN_SECTIONS = 2
MAX_SECTIONS = 32
MAX_SIGNATURE_SIZE = 32768
MAX_METADATA_SIZE = 1024 * 1024
DEFAULT_MEM = 1024 * 1024 * 1024  # what nitro-cli writes; unused by the stack
DEFAULT_CPUS = 2
FLAG_ARCH_ARM64 = 0x1
CHUNK = 1024 * 1024

# byte offsets of header fields, so errors can point at the field that is wrong
OFF_VERSION = 0x04
OFF_NUM_SECTIONS = 0x1A
OFF_SECTION_OFFSETS = 0x1C
OFF_SECTION_SIZES = 0x11C
OFF_CRC = 0x220

assert HEADER_SIZE == 548 and SECTION_HEADER_SIZE == 12


class SectionType(IntEnum):
    INVALID = 0
    KERNEL = 1
    CMDLINE = 2
    RAMDISK = 3
    SIGNATURE = 4
    METADATA = 5


class EifError(NitrodeckError):
    """A malformed EIF. ``offset`` is the byte offset of the defect, ``problem`` a short kind name."""

    code = "ND-EIF"

    def __init__(self, message: str, *, offset: int, problem: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, where=f"offset 0x{offset:x}")
        self.offset = offset
        self.problem = problem


@dataclass(frozen=True)
class EifHeader:
    magic: bytes
    version: int
    flags: int
    default_mem: int
    default_cpus: int
    reserved: int
    num_sections: int
    section_offsets: tuple[int, ...]
    section_sizes: tuple[int, ...]
    unused: int
    crc32: int

    @property
    def arch(self) -> str:
        return "aarch64" if self.flags & FLAG_ARCH_ARM64 else "x86_64"

    def pack(self) -> bytes:
        return struct.pack(
            HEADER_FORMAT,
            self.magic,
            self.version,
            self.flags,
            self.default_mem,
            self.default_cpus,
            self.reserved,
            self.num_sections,
            *self.section_offsets,
            *self.section_sizes,
            self.unused,
            self.crc32,
        )

    @classmethod
    def unpack(cls, raw: bytes) -> EifHeader:
        fields = struct.unpack(HEADER_FORMAT, raw)
        return cls(
            magic=fields[0],
            version=fields[1],
            flags=fields[2],
            default_mem=fields[3],
            default_cpus=fields[4],
            reserved=fields[5],
            num_sections=fields[6],
            section_offsets=tuple(fields[7:39]),
            section_sizes=tuple(fields[39:71]),
            unused=fields[71],
            crc32=fields[72],
        )


@dataclass(frozen=True)
class EifSection:
    index: int  # position in the header's section table
    type: SectionType
    offset: int  # file offset of the 12-byte section header
    size: int  # data size, without the section header
    flags: int = 0

    @property
    def data_offset(self) -> int:
        return self.offset + SECTION_HEADER_SIZE

    @property
    def end(self) -> int:
        return self.data_offset + self.size


def _stamp(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_nlink, st.st_ctime_ns)


class _Source:
    """The one open descriptor an EifFile reads through, and what fstat said when it was opened.

    Everything (structure, CRC, PCRs, signature, metadata, the unpacked ramdisk) is read from this
    descriptor with pread, never by re-opening the path: a file renamed over the path meanwhile is
    not seen, and a file written in place meanwhile is detected (:meth:`EifFile.check_unchanged`).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        st = os.fstat(fd)
        self.stamp = _stamp(st)
        self._finalizer = weakref.finalize(self, os.close, fd)

    def close(self) -> None:
        self._finalizer()

    def pread_into(self, view: memoryview, offset: int) -> int:
        return os.preadv(self.fd, [view], offset)

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self.fd, size, offset)


@dataclass
class EifFile:
    """A validated EIF. ``sections`` are in file order (which nitro-cli also uses for PCRs).

    ``path`` is for messages only: all reads go through the descriptor opened once by
    :func:`read_eif` (or a private copy, :func:`read_eif_private`).
    """

    path: Path
    file_size: int
    header: EifHeader
    sections: list[EifSection]
    _source: _Source | None = field(default=None, repr=False, compare=False)
    _crc: int | None = field(default=None, repr=False, compare=False)

    @property
    def source(self) -> _Source:
        if self._source is None:
            raise EifError("this EIF has no open file", offset=0, problem="unreadable")
        return self._source

    def close(self) -> None:
        if self._source is not None:
            self._source.close()

    def __enter__(self) -> EifFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_unchanged(self) -> None:
        """Refuse (typed) results read from a file that was written in place while being read."""
        src = self.source
        now = _stamp(os.fstat(src.fd))
        # a rename over the path or a new hard link changes the link count and the ctime, but not
        # the bytes we read; a write changes the mtime (and the ctime at the same link count)
        same_links = now[3] == src.stamp[3]
        if now[:3] != src.stamp[:3] or (same_links and now[4] != src.stamp[4]):
            raise EifError(
                f"{self.path} changed while it was being read",
                offset=0,
                problem="changed",
                hint="do not modify an EIF while nitrodeck reads it; run the command again",
            )

    @property
    def computed_crc(self) -> int:
        """CRC over header[0:544] + every section in file order; computed on first use, because it
        is a full pass over the file that measuring does not need."""
        if self._crc is None:
            crc = zlib.crc32(self.header.pack()[:CRC_COVERED])
            for sec in self.sections:
                for data in _iter_range(self.source, sec.offset, SECTION_HEADER_SIZE + sec.size, CHUNK):
                    crc = zlib.crc32(data, crc)
            self._crc = crc
        return self._crc

    def set_computed_crc(self, crc: int) -> None:
        """The CRC as computed by a pass that read the whole file anyway (core.eif.measure)."""
        self._crc = crc

    @property
    def crc_ok(self) -> bool:
        return self.computed_crc == self.header.crc32

    @property
    def version(self) -> int:
        return self.header.version

    def of_type(self, kind: SectionType) -> list[EifSection]:
        return [s for s in self.sections if s.type == kind]

    @property
    def kernel(self) -> EifSection:
        return self.of_type(SectionType.KERNEL)[0]

    @property
    def cmdline_section(self) -> EifSection:
        return self.of_type(SectionType.CMDLINE)[0]

    @property
    def ramdisks(self) -> list[EifSection]:
        return self.of_type(SectionType.RAMDISK)

    @property
    def signature(self) -> EifSection | None:
        found = self.of_type(SectionType.SIGNATURE)
        return found[0] if found else None

    @property
    def metadata_section(self) -> EifSection | None:
        found = self.of_type(SectionType.METADATA)
        return found[0] if found else None

    @property
    def is_signed(self) -> bool:
        return self.signature is not None

    def read_section(self, section: EifSection, limit: int) -> bytes:
        """Whole data of a small section (cmdline, metadata, signature); refuses more than ``limit``."""
        if section.size > limit:
            raise EifError(
                f"{section.type.name.lower()} section is {section.size} bytes, over the {limit}-byte limit",
                offset=section.offset,
                problem="section too large",
            )
        data = self.source.pread(section.size, section.data_offset)
        if len(data) != section.size:
            raise EifError("file changed while reading", offset=section.data_offset, problem="truncated")
        return data

    def iter_section(self, section: EifSection, chunk: int = CHUNK) -> Iterator[bytes]:
        yield from _iter_range(self.source, section.data_offset, section.size, chunk)

    def open_section(self, section: EifSection) -> BinaryIO:
        """A buffered stream over exactly one section's data (never reads past it)."""
        return io.BufferedReader(_RangeReader(self.source, section.data_offset, section.size), CHUNK)

    def cmdline(self) -> str:
        return self.read_section(self.cmdline_section, 64 * 1024).decode("utf-8", "replace")

    def metadata(self) -> dict[str, Any] | None:
        """The metadata section's JSON object, or None for EIFs without one."""
        section = self.metadata_section
        if section is None:
            return None
        raw = self.read_section(section, MAX_METADATA_SIZE)
        try:
            value = json.loads(raw)
        except (
            ValueError,
            RecursionError,
        ) as exc:  # UnicodeDecodeError is a ValueError; deep nesting recurses
            raise EifError(
                f"metadata section is not valid JSON: {exc}",
                offset=section.data_offset,
                problem="bad metadata",
            ) from exc
        if not isinstance(value, dict):
            raise EifError(
                f"metadata section should be a JSON object, got {type(value).__name__}",
                offset=section.data_offset,
                problem="bad metadata",
            )
        return value


class _RangeReader(io.RawIOBase):
    """Raw stream over [offset, offset+size) of the EIF's open descriptor (pread: no shared offset)."""

    def __init__(self, source: _Source, offset: int, size: int) -> None:
        super().__init__()
        self._source = source
        self._pos = offset
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._left)
        if want <= 0:
            return 0
        n = self._source.pread_into(view[:want], self._pos)
        self._pos += n
        self._left -= n
        return n


def _iter_range(source: _Source, offset: int, size: int, chunk: int) -> Iterator[bytes]:
    pos, left = offset, size
    while left > 0:
        data = source.pread(min(chunk, left), pos)
        if not data:
            raise EifError("file ends inside a section", offset=pos, problem="truncated")
        pos += len(data)
        left -= len(data)
        yield data


def _fail(problem: str, offset: int, message: str) -> EifError:
    return EifError(message, offset=offset, problem=problem)


def _open_eif(path: Path) -> int:
    """Open once, without blocking on a FIFO or device, and refuse anything but a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise EifError(f"cannot open EIF {path}: {exc.strerror}", offset=0, problem="unreadable") from exc
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise EifError(f"cannot open EIF {path}: {exc.strerror}", offset=0, problem="unreadable") from exc
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise EifError(
            f"{path} is {kind_of(st.st_mode)}, not an EIF file", offset=0, problem="not a regular file"
        )
    return fd


def eif_from_fd(fd: int, path: Path) -> EifFile:
    """Parse the EIF behind ``fd`` (owned by the result from now on; closed on failure)."""
    source = _Source(fd)
    try:
        eif = _parse(source, path, source.stamp[0])
    except BaseException:
        source.close()
        raise
    eif._source = source
    return eif


def read_eif(path: str | os.PathLike[str]) -> EifFile:
    """Parse and validate an EIF. Raises :class:`EifError` for any structural defect.

    The result keeps the file open: measure, check and unpack it from this object, never by path.
    """
    path = Path(path)
    return eif_from_fd(_open_eif(path), path)


def read_eif_fd(fd: int, path: str | os.PathLike[str]) -> EifFile:
    """Parse an EIF from a descriptor we hold (e.g. an output before it is published); ``fd`` is
    duplicated, so the caller keeps its own."""
    return eif_from_fd(os.dup(fd), Path(path))


def _private_fd(folder: Path) -> int:
    """An unnamed file only this process can reach (O_TMPFILE; else a temp file unlinked at once)."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            return os.open(folder, tmpfile | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    import tempfile

    fd, name = tempfile.mkstemp(prefix=".eif-copy-", dir=str(folder))
    os.unlink(name)
    return fd


def copy_private(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> int:
    """A descriptor of an unnamed copy of the EIF at ``path`` in ``folder`` (the caller owns it).

    Parse it with :func:`eif_from_fd`: what is then measured, checked and unpacked is exactly what
    runs, whatever happens to ``path`` meanwhile. A FIFO or device at ``path`` is refused (EifError).
    """
    path = Path(path)
    src = _open_eif(path)
    try:
        try:
            dst = _private_fd(Path(folder))
        except OSError as exc:
            raise EifError(
                f"cannot make a private copy of the EIF in {folder}: {exc.strerror}",
                offset=0,
                problem="no space" if exc.errno == errno.ENOSPC else "unreadable",
            ) from exc
        try:
            _copy_fd(src, dst)
        except OSError as exc:
            os.close(dst)
            raise EifError(
                f"cannot copy the EIF: {exc.strerror}",
                offset=0,
                problem="no space" if exc.errno == errno.ENOSPC else "unreadable",
            ) from exc
    finally:
        os.close(src)
    return dst


def read_eif_private(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> EifFile:
    """Parse a private copy (:func:`copy_private`) of the EIF at ``path``."""
    return eif_from_fd(copy_private(path, folder), Path(path))


def _copy_fd(src: int, dst: int) -> None:
    """Copy until the end of ``src`` as it is now (a source that grows is copied as far as it is)."""
    offset = 0
    while True:
        try:
            n = os.copy_file_range(src, dst, CHUNK * 16, offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            n = _copy_plain(src, dst, offset)
        if n == 0:
            return
        offset += n


def _copy_plain(src: int, dst: int, offset: int) -> int:
    data = os.pread(src, CHUNK, offset)
    view = memoryview(data)
    while view:
        written = os.pwrite(dst, view, offset)
        view = view[written:]
        offset += written
    return len(data)


def _parse(src: _Source, path: Path, file_size: int) -> EifFile:
    raw = src.pread(HEADER_SIZE, 0)
    if len(raw) < 4 or raw[:4] != MAGIC:
        if len(raw) < 4:
            raise _fail("truncated", len(raw), f"file is {file_size} bytes, too short for an EIF header")
        raise _fail("bad magic", 0, f"bad magic {raw[:4]!r}, expected {MAGIC!r}: not an EIF file")
    if len(raw) < HEADER_SIZE:
        raise _fail(
            "truncated",
            len(raw),
            f"file is {file_size} bytes, shorter than the {HEADER_SIZE}-byte EIF header",
        )
    header = EifHeader.unpack(raw)
    if header.version != VERSION:
        raise _fail(
            "unsupported version",
            OFF_VERSION,
            f"unsupported EIF version {header.version} (only version {VERSION} is supported)",
        )
    count = header.num_sections
    if not MIN_SECTIONS <= count <= MAX_SECTIONS:
        raise _fail(
            "bad section count",
            OFF_NUM_SECTIONS,
            f"num_sections is {count}, outside the valid range {MIN_SECTIONS}..{MAX_SECTIONS}",
        )

    sections: list[EifSection] = []
    for i in range(count):
        off, size = header.section_offsets[i], header.section_sizes[i]
        if off < HEADER_SIZE or off + SECTION_HEADER_SIZE > file_size:
            raise _fail(
                "section beyond file",
                OFF_SECTION_OFFSETS + 8 * i,
                f"section {i} header offset 0x{off:x} is outside the file (header ends at 0x{HEADER_SIZE:x}, "
                f"file is 0x{file_size:x} bytes)",
            )
        end = off + SECTION_HEADER_SIZE + size
        if end > file_size:
            raise _fail(
                "truncated",
                OFF_SECTION_SIZES + 8 * i,
                f"section {i} (offset 0x{off:x}, size {size}) ends at 0x{end:x}, beyond the end of the file "
                f"(0x{file_size:x} bytes): file truncated or size wrong",
            )
        sections.append(EifSection(index=i, type=SectionType.INVALID, offset=off, size=size))

    ordered = sorted(sections, key=lambda s: s.offset)
    for prev, cur in zip(ordered, ordered[1:], strict=False):
        if cur.offset < prev.end:
            raise _fail(
                "overlap",
                cur.offset,
                f"section {cur.index} at 0x{cur.offset:x} overlaps section {prev.index} "
                f"(0x{prev.offset:x}..0x{prev.end:x})",
            )

    typed: list[EifSection] = []
    for sec in ordered:
        sh = src.pread(SECTION_HEADER_SIZE, sec.offset)
        if len(sh) != SECTION_HEADER_SIZE:
            raise _fail("truncated", sec.offset, f"section {sec.index} header is cut short")
        stype, sflags, ssize = struct.unpack(SECTION_HEADER_FORMAT, sh)
        if stype == 0 or stype > max(SectionType):
            raise _fail(
                "invalid section type",
                sec.offset,
                f"section {sec.index} has invalid section type {stype} (valid: 1..{int(max(SectionType))})",
            )
        if ssize != sec.size:
            raise _fail(
                "section header mismatch",
                sec.offset + 4,
                f"section {sec.index} header says size {ssize} but the header table says {sec.size}",
            )
        kind = SectionType(stype)
        if kind == SectionType.SIGNATURE and ssize > MAX_SIGNATURE_SIZE:
            raise _fail(
                "signature too large",
                sec.offset,
                f"signature section is {ssize} bytes, over the {MAX_SIGNATURE_SIZE}-byte maximum",
            )
        typed.append(EifSection(index=sec.index, type=kind, offset=sec.offset, size=sec.size, flags=sflags))

    counts = {kind: sum(1 for s in typed if s.type == kind) for kind in SectionType}
    for kind in (SectionType.KERNEL, SectionType.CMDLINE, SectionType.RAMDISK):
        if counts[kind] == 0:
            raise _fail("missing section", OFF_NUM_SECTIONS, f"no {kind.name.lower()} section in the EIF")
    for kind in (SectionType.KERNEL, SectionType.CMDLINE, SectionType.SIGNATURE, SectionType.METADATA):
        if counts[kind] > 1:
            dup = [s for s in typed if s.type == kind][1]
            raise _fail("duplicate section", dup.offset, f"more than one {kind.name.lower()} section")
    kernel_at = next(s.offset for s in typed if s.type == SectionType.KERNEL)
    early = [s for s in typed if s.type == SectionType.RAMDISK and s.offset < kernel_at]
    if early:
        raise _fail("section order", early[0].offset, "a ramdisk section comes before the kernel")

    return EifFile(path=path, file_size=file_size, header=header, sections=typed)


# --- writing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRange:
    """Part of an open EIF used as section data (re-signing copies sections this way): read from
    the EIF's own descriptor, so what is copied is what was measured."""

    eif: EifFile | Path  # a Path is opened here (tests, plain files); an EifFile is read through its descriptor
    offset: int
    size: int


@dataclass(frozen=True)
class Reserved:
    """Section data its owner writes into place itself (the builder streams the customer ramdisk): only
    its size is known here, for the layout and the header; :meth:`EifWriter.write_to` refuses it."""

    size: int


SectionSource = bytes | Path | FileRange | Reserved


def _source_size(source: SectionSource) -> int:
    if isinstance(source, bytes):
        return len(source)
    if isinstance(source, FileRange | Reserved):
        return source.size
    return source.stat().st_size


def _iter_source(source: SectionSource, chunk: int = CHUNK) -> Iterator[bytes]:
    if isinstance(source, Reserved):
        raise ValueError("a reserved section is written by its owner, not by EifWriter.write_to")
    if isinstance(source, bytes):
        for start in range(0, len(source), chunk):
            yield source[start : start + chunk]
        return
    if isinstance(source, FileRange) and isinstance(source.eif, EifFile):
        yield from _iter_range(source.eif.source, source.offset, source.size, chunk)
        return
    path, offset = (source.eif, source.offset) if isinstance(source, FileRange) else (source, 0)
    assert isinstance(path, Path)
    size = _source_size(source)
    with open(path, "rb") as fh:
        fh.seek(offset)
        left = size
        while left > 0:
            data = fh.read(min(chunk, left))
            if not data:
                raise EifError(
                    f"{path} shrank while being written into the EIF", offset=0, problem="truncated"
                )
            left -= len(data)
            yield data


@dataclass
class EifWriter:
    """Collects sections (bytes or files, streamed) and writes an EIF v4 file.

    Add sections in nitro-cli's order: kernel, cmdline, metadata, ramdisks, signature.
    """

    flags: int = 0
    default_mem: int = DEFAULT_MEM
    default_cpus: int = DEFAULT_CPUS
    sections: list[tuple[SectionType, SectionSource]] = field(default_factory=list)

    def add(self, kind: SectionType, source: SectionSource) -> EifWriter:
        if kind == SectionType.INVALID:
            raise ValueError("cannot add an INVALID section")
        if len(self.sections) >= MAX_SECTIONS:
            raise EifError(
                f"an EIF holds at most {MAX_SECTIONS} sections", offset=0, problem="bad section count"
            )
        self.sections.append((kind, source))
        return self

    def layout(self) -> tuple[list[int], list[int]]:
        offsets, sizes = [], []
        pos = HEADER_SIZE
        for _, source in self.sections:
            size = _source_size(source)
            offsets.append(pos)
            sizes.append(size)
            pos += SECTION_HEADER_SIZE + size
        return offsets, sizes

    def header(self, crc: int = 0) -> EifHeader:
        offsets, sizes = self.layout()
        pad = MAX_SECTIONS - len(offsets)
        return EifHeader(
            magic=MAGIC,
            version=VERSION,
            flags=self.flags,
            default_mem=self.default_mem,
            default_cpus=self.default_cpus,
            reserved=0,
            num_sections=len(self.sections),
            section_offsets=tuple(offsets + [0] * pad),
            section_sizes=tuple(sizes + [0] * pad),
            unused=0,
            crc32=crc,
        )

    def write_to(self, fh: BinaryIO) -> int:
        """Write to a seekable binary stream positioned at 0; returns the CRC."""
        if not MIN_SECTIONS <= len(self.sections) <= MAX_SECTIONS:
            raise EifError(
                f"an EIF needs {MIN_SECTIONS}..{MAX_SECTIONS} sections, got {len(self.sections)}",
                offset=OFF_NUM_SECTIONS,
                problem="bad section count",
            )
        header = self.header()
        crc = zlib.crc32(header.pack()[:CRC_COVERED])
        fh.write(header.pack())
        for (kind, source), size in zip(self.sections, header.section_sizes, strict=False):
            sh = struct.pack(SECTION_HEADER_FORMAT, int(kind), 0, size)
            crc = zlib.crc32(sh, crc)
            fh.write(sh)
            written = 0
            for data in _iter_source(source):
                crc = zlib.crc32(data, crc)
                fh.write(data)
                written += len(data)
            if written != size:
                raise EifError(
                    f"{kind.name.lower()} source changed size while writing",
                    offset=fh.tell(),
                    problem="truncated",
                )
        fh.seek(OFF_CRC)
        fh.write(struct.pack(">I", crc))
        fh.seek(0, os.SEEK_END)
        return crc

    def write_into(self, out: AtomicOutput) -> EifFile:
        """Write into an output not yet published and return it parsed from our own descriptor, so
        the caller measures exactly the bytes it is about to publish."""
        self.write_to(out.fh)
        out.fh.flush()
        return read_eif_fd(out.fh.fileno(), out.target)

    def write(self, path: str | os.PathLike[str]) -> int:
        """Write atomically (temp file + rename) so a failed build never leaves half an EIF; a
        target that exists and is not a regular file is refused (core.files.atomic_output)."""
        with atomic_output(Path(path), mode=0o644) as out:
            crc = self.write_to(out.fh)
        return crc
