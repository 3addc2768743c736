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

import io
import json
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO

from core.errors import NitrodeckError

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


@dataclass
class EifFile:
    """A validated EIF. ``sections`` are in file order (which nitro-cli also uses for PCRs)."""

    path: Path
    file_size: int
    header: EifHeader
    sections: list[EifSection]
    _crc: int | None = field(default=None, repr=False, compare=False)

    @property
    def computed_crc(self) -> int:
        """CRC over header[0:544] + every section in file order; computed on first use, because it
        is a full pass over the file that measuring does not need."""
        if self._crc is None:
            crc = zlib.crc32(self.header.pack()[:CRC_COVERED])
            with open(self.path, "rb") as fh:
                for sec in self.sections:
                    for data in _iter_range(fh, sec.offset, SECTION_HEADER_SIZE + sec.size, CHUNK):
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
        with open(self.path, "rb") as fh:
            fh.seek(section.data_offset)
            data = fh.read(section.size)
        if len(data) != section.size:
            raise EifError("file changed while reading", offset=section.data_offset, problem="truncated")
        return data

    def iter_section(self, section: EifSection, chunk: int = CHUNK) -> Iterator[bytes]:
        with open(self.path, "rb") as fh:
            yield from _iter_range(fh, section.data_offset, section.size, chunk)

    def open_section(self, section: EifSection) -> BinaryIO:
        """A buffered stream over exactly one section's data (never reads past it)."""
        return io.BufferedReader(_RangeReader(self.path, section.data_offset, section.size), CHUNK)

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
    """Raw stream over [offset, offset+size) of a file."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        super().__init__()
        self._fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._fh.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._left)
        if want <= 0:
            return 0
        n = self._fh.readinto(view[:want]) or 0
        self._left -= n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def _iter_range(fh: BinaryIO, offset: int, size: int, chunk: int) -> Iterator[bytes]:
    fh.seek(offset)
    left = size
    while left > 0:
        data = fh.read(min(chunk, left))
        if not data:
            raise EifError("file ends inside a section", offset=fh.tell(), problem="truncated")
        left -= len(data)
        yield data


def _fail(problem: str, offset: int, message: str) -> EifError:
    return EifError(message, offset=offset, problem=problem)


def read_eif(path: str | os.PathLike[str]) -> EifFile:
    """Parse and validate an EIF. Raises :class:`EifError` for any structural defect."""
    path = Path(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed in the finally below
    except OSError as exc:
        raise EifError(f"cannot open EIF {path}: {exc.strerror}", offset=0, problem="unreadable") from exc
    try:
        file_size = os.fstat(fh.fileno()).st_size
        return _parse(fh, path, file_size)
    finally:
        fh.close()


def _parse(fh: BinaryIO, path: Path, file_size: int) -> EifFile:
    raw = fh.read(HEADER_SIZE)
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
        fh.seek(sec.offset)
        sh = fh.read(SECTION_HEADER_SIZE)
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
    """Part of an existing file used as section data (re-signing copies sections this way)."""

    path: Path
    offset: int
    size: int


SectionSource = bytes | Path | FileRange


def _source_size(source: SectionSource) -> int:
    if isinstance(source, bytes):
        return len(source)
    if isinstance(source, FileRange):
        return source.size
    return source.stat().st_size


def _iter_source(source: SectionSource, chunk: int = CHUNK) -> Iterator[bytes]:
    if isinstance(source, bytes):
        for start in range(0, len(source), chunk):
            yield source[start : start + chunk]
        return
    path, offset = (source.path, source.offset) if isinstance(source, FileRange) else (source, 0)
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

    def write(self, path: str | os.PathLike[str]) -> int:
        """Write atomically (temp file + rename) so a failed build never leaves half an EIF."""
        target = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=".eif-", dir=str(target.parent.absolute()))
        try:
            with os.fdopen(fd, "w+b") as fh:
                crc = self.write_to(fh)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return crc
