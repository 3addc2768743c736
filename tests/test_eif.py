"""EIF v4 reader/writer: nitro-cli's layout, every structural defect as a typed error, fuzzing."""

from __future__ import annotations

import hashlib
import os
import random
import struct
import tempfile
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.eif.format import (
    HEADER_SIZE,
    OFF_NUM_SECTIONS,
    OFF_SECTION_OFFSETS,
    OFF_SECTION_SIZES,
    OFF_VERSION,
    EifError,
    EifWriter,
    FileRange,
    SectionType,
    read_eif,
)
from core.eif.measure import measure_eif
from core.errors import NitrodeckError
from tests.conftest import scratch_dir

K, C, M, R = SectionType.KERNEL, SectionType.CMDLINE, SectionType.METADATA, SectionType.RAMDISK


def tiny_writer() -> EifWriter:
    """The tiny EIF of nitro-cli.md §5 (layout/CRC regression vector)."""
    w = EifWriter()
    w.add(K, b"KERNEL").add(C, b"console=ttyS0").add(M, b"{}").add(R, b"RAMDISK0").add(R, b"RAMDISK1")
    return w


def tiny_bytes(tmp: Path) -> bytes:
    path = tmp / "tiny.eif"
    tiny_writer().write(path)
    return path.read_bytes()


def write(tmp: Path, data: bytes | bytearray, name: str = "x.eif") -> Path:
    path = tmp / name
    path.write_bytes(bytes(data))
    return path


def expect(path: Path, problem: str, offset: int, text: str) -> EifError:
    with pytest.raises(EifError) as err:
        read_eif(path)
    assert err.value.problem == problem
    assert err.value.offset == offset
    assert err.value.where == f"offset 0x{offset:x}"
    assert text in err.value.message
    assert isinstance(err.value, NitrodeckError)
    return err.value


def test_layout_and_crc_vector(tmp_path: Path) -> None:
    crc = tiny_writer().write(tmp_path / "t.eif")
    eif = read_eif(tmp_path / "t.eif")
    assert [s.offset for s in eif.sections] == [548, 566, 591, 605, 625]
    assert [s.type for s in eif.sections] == [K, C, M, R, R]
    assert crc == eif.header.crc32 == eif.computed_crc == 0xC76F9A38
    assert eif.crc_ok
    assert eif.header.version == 4 and eif.header.default_mem == 1 << 30 and eif.header.default_cpus == 2
    assert eif.header.arch == "x86_64"
    assert eif.cmdline() == "console=ttyS0"
    assert eif.metadata() == {}
    assert eif.file_size == 625 + 12 + 8
    raw = (tmp_path / "t.eif").read_bytes()
    assert raw[:4] == b".eif" and struct.unpack(">H", raw[4:6])[0] == 4
    assert zlib.crc32(raw[:544] + raw[548:]) == 0xC76F9A38


def test_writer_streams_from_files_and_ranges(tmp_path: Path) -> None:
    big = tmp_path / "rd.bin"
    big.write_bytes(bytes(range(256)) * 9000)  # > 2 chunks
    w = EifWriter().add(K, b"k").add(C, b"c").add(R, big).add(R, FileRange(big, 10, 100))
    w.write(tmp_path / "f.eif")
    eif = read_eif(tmp_path / "f.eif")
    assert eif.crc_ok
    assert b"".join(eif.iter_section(eif.ramdisks[0])) == big.read_bytes()
    assert b"".join(eif.iter_section(eif.ramdisks[1])) == big.read_bytes()[10:110]


def test_crc_mismatch_is_reported_not_raised(tmp_path: Path) -> None:
    raw = bytearray(tiny_bytes(tmp_path))
    raw[-1] ^= 0x01  # inside ramdisk1's data
    eif = read_eif(write(tmp_path, raw))
    assert eif.crc_ok is False
    assert eif.computed_crc != eif.header.crc32


def test_bad_magic(tmp_path: Path) -> None:
    raw = bytearray(tiny_bytes(tmp_path))
    raw[0:4] = b"\x7fELF"
    expect(write(tmp_path, raw), "bad magic", 0, "not an EIF")


@pytest.mark.parametrize("version", [0, 2, 3, 5, 0xFFFF])
def test_unknown_version_names_it(tmp_path: Path, version: int) -> None:
    raw = bytearray(tiny_bytes(tmp_path))
    raw[OFF_VERSION : OFF_VERSION + 2] = struct.pack(">H", version)
    expect(
        write(tmp_path, raw),
        "unsupported version",
        OFF_VERSION,
        f"unsupported EIF version {version} (only version 4",
    )


@pytest.mark.parametrize("count", [0, 1, 33, 0xFFFF])
def test_section_count_out_of_range(tmp_path: Path, count: int) -> None:
    raw = bytearray(tiny_bytes(tmp_path))
    raw[OFF_NUM_SECTIONS : OFF_NUM_SECTIONS + 2] = struct.pack(">H", count)
    expect(write(tmp_path, raw), "bad section count", OFF_NUM_SECTIONS, f"num_sections is {count}, outside")


def test_section_offset_beyond_file(tmp_path: Path) -> None:
    raw = bytearray(tiny_bytes(tmp_path))
    field = OFF_SECTION_OFFSETS + 8 * 2
    raw[field : field + 8] = struct.pack(">Q", 1 << 62)
    expect(write(tmp_path, raw), "section beyond file", field, "section 2 header offset 0x4000000000000000")


def test_section_offset_inside_header(tmp_path: Path) -> None:
    raw = bytearray(tiny_bytes(tmp_path))
    field = OFF_SECTION_OFFSETS
    raw[field : field + 8] = struct.pack(">Q", 100)
    expect(write(tmp_path, raw), "section beyond file", field, "outside the file")


def test_huge_section_size_is_not_allocated(tmp_path: Path) -> None:
    raw = bytearray(tiny_bytes(tmp_path))
    field = OFF_SECTION_SIZES + 8 * 3
    raw[field : field + 8] = struct.pack(">Q", (1 << 64) - 1)
    expect(write(tmp_path, raw), "truncated", field, "beyond the end of the file")


def test_truncated_file(tmp_path: Path) -> None:
    raw = tiny_bytes(tmp_path)
    expect(
        write(tmp_path, raw[:-3]), "truncated", OFF_SECTION_SIZES + 8 * 4, "section 4 (offset 0x271, size 8)"
    )
    expect(write(tmp_path, raw[:300], "short.eif"), "truncated", 300, "shorter than the 548-byte EIF header")
    expect(write(tmp_path, raw[:2], "tiny.eif"), "truncated", 2, "too short")


def test_overlapping_sections(tmp_path: Path) -> None:
    raw = bytearray(tiny_bytes(tmp_path))
    field = OFF_SECTION_OFFSETS + 8 * 1
    raw[field : field + 8] = struct.pack(">Q", 560)  # cmdline header inside the kernel's data
    expect(write(tmp_path, raw), "overlap", 560, "section 1 at 0x230 overlaps section 0")


def test_section_header_size_disagrees_with_table(tmp_path: Path) -> None:
    raw = bytearray(tiny_bytes(tmp_path))
    raw[566 + 4 : 566 + 12] = struct.pack(">Q", 14)
    expect(
        write(tmp_path, raw),
        "section header mismatch",
        566 + 4,
        "header says size 14 but the header table says 13",
    )


@pytest.mark.parametrize("stype", [0, 6, 0xFFFF])
def test_invalid_section_type(tmp_path: Path, stype: int) -> None:
    raw = bytearray(tiny_bytes(tmp_path))
    raw[591:593] = struct.pack(">H", stype)
    expect(write(tmp_path, raw), "invalid section type", 591, f"invalid section type {stype}")


@pytest.mark.parametrize(
    "kinds,missing",
    [((C, R), "kernel"), ((K, R), "cmdline"), ((K, C, M), "ramdisk")],
)
def test_missing_mandatory_section(tmp_path: Path, kinds: tuple[SectionType, ...], missing: str) -> None:
    w = EifWriter()
    for kind in kinds:
        w.add(kind, b"{}")
    w.write(tmp_path / "m.eif")
    expect(tmp_path / "m.eif", "missing section", OFF_NUM_SECTIONS, f"no {missing} section")


def test_duplicate_kernel(tmp_path: Path) -> None:
    EifWriter().add(K, b"a").add(K, b"b").add(C, b"c").add(R, b"r").write(tmp_path / "d.eif")
    expect(tmp_path / "d.eif", "duplicate section", HEADER_SIZE + 13, "more than one kernel")


def test_signature_section_limit(tmp_path: Path) -> None:
    w = tiny_writer().add(SectionType.SIGNATURE, b"\0" * 32769)
    w.write(tmp_path / "s.eif")
    expect(tmp_path / "s.eif", "signature too large", 645, "32769 bytes, over the 32768-byte maximum")
    ok = tiny_writer().add(SectionType.SIGNATURE, b"\0" * 32768)
    ok.write(tmp_path / "ok.eif")
    assert read_eif(tmp_path / "ok.eif").is_signed


def test_metadata_json_errors(tmp_path: Path) -> None:
    EifWriter().add(K, b"k").add(C, b"c").add(M, b"{nope").add(R, b"r").write(tmp_path / "a.eif")
    eif = read_eif(tmp_path / "a.eif")
    with pytest.raises(EifError) as err:
        eif.metadata()
    assert err.value.problem == "bad metadata" and err.value.offset == eif.metadata_section.data_offset  # type: ignore[union-attr]
    EifWriter().add(K, b"k").add(C, b"c").add(M, b"[1]").add(R, b"r").write(tmp_path / "b.eif")
    with pytest.raises(EifError, match="JSON object, got list"):
        read_eif(tmp_path / "b.eif").metadata()
    big = b'{"a":"' + b"x" * (1024 * 1024) + b'"}'
    EifWriter().add(K, b"k").add(C, b"c").add(M, big).add(R, b"r").write(tmp_path / "c.eif")
    with pytest.raises(EifError) as err:
        read_eif(tmp_path / "c.eif").metadata()
    assert err.value.problem == "section too large"


def test_unreadable_file_is_typed(tmp_path: Path) -> None:
    with pytest.raises(EifError) as err:
        read_eif(tmp_path / "absent.eif")
    assert err.value.problem == "unreadable"


# --- fuzzing --------------------------------------------------------------------------------------

with tempfile.TemporaryDirectory(prefix="nd-eif-base-") as _tmp:
    _BASE = tiny_bytes(Path(_tmp))


@pytest.fixture(scope="module")
def fuzz_dir() -> Iterator[Path]:
    # tmpfs where available: the fuzzer rewrites and reopens a file ~30,000 times, and on a busy disk
    # each open of a just-truncated file can cost milliseconds
    with scratch_dir("nd-eif-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else "/tmp") as folder:
        yield folder
_U16_FIELDS = [4, 6, 0x18, OFF_NUM_SECTIONS] + [o + d for o in (548, 566, 591, 605, 625) for d in (0, 2)]
_U64_FIELDS = (
    [8, 16]
    + [OFF_SECTION_OFFSETS + 8 * i for i in range(7)]
    + [OFF_SECTION_SIZES + 8 * i for i in range(7)]
    + [o + 4 for o in (548, 566, 591, 605, 625)]
)


def _mutate(base: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    raw = bytearray(base)
    for op, a, b in ops:
        if op == "flip" and a < len(raw):
            raw[a] ^= 1 << b
        elif op == "truncate":
            del raw[a:]
        elif op == "u16" and a + 2 <= len(raw):
            raw[a : a + 2] = struct.pack(">H", b & 0xFFFF)
        elif op == "u64" and a + 8 <= len(raw):
            raw[a : a + 8] = struct.pack(">Q", b)
        elif op == "append":
            raw += bytes([b]) * a
    return bytes(raw)


def _random_ops(seed: int, count: int) -> list[tuple[str, int, int]]:
    """Mutations derived from one seed: drawing them from a seed keeps hypothesis' per-example cost low."""
    rnd = random.Random(seed)
    values = [0, 1, 2, 5, 32, 33, 548, 560, 566, 591, 605, 625, 637, 645, 4096, 32768, 32769, (1 << 64) - 1]
    ops: list[tuple[str, int, int]] = []
    for _ in range(count):
        kind = rnd.randrange(5)
        value = rnd.choice(values) if rnd.random() < 0.6 else rnd.getrandbits(rnd.choice([8, 16, 32, 64]))
        if kind == 0:
            ops.append(("flip", rnd.randrange(len(_BASE)), rnd.randrange(8)))
        elif kind == 1:
            ops.append(("truncate", rnd.randrange(len(_BASE) + 1), 0))
        elif kind == 2:
            ops.append(("u16", rnd.choice(_U16_FIELDS), value))
        elif kind == 3:
            ops.append(("u64", rnd.choice(_U64_FIELDS), value))
        else:
            ops.append(("append", rnd.randrange(1, 65), rnd.randrange(256)))
    return ops


#: mutated EIFs per hypothesis example; 1,250 examples x 8 = 10,000 files. Batching keeps hypothesis' own
#: per-example bookkeeping (most of the cost at one file per example) off the 10,000.
_PER_EXAMPLE = 8


def _check_one(folder: Path, data: bytes, trace: bool) -> None:
    path = folder / "fuzz.eif"
    path.write_bytes(data)
    if trace:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        try:
            eif = read_eif(path)
            eif.metadata()
            eif.cmdline()
            assert eif.crc_ok == (eif.computed_crc == eif.header.crc32)
            if data == _BASE:
                assert eif.crc_ok
        except EifError as exc:
            assert exc.problem and exc.where and exc.where.startswith("offset 0x")
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        if trace:
            tracemalloc.stop()
    # the reader must never allocate in proportion to what a header claims, only to the file
    assert peak < 64 * 1024 + 4 * len(data), f"peak {peak} bytes for a {len(data)}-byte file"


@settings(max_examples=10000 // _PER_EXAMPLE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_fuzz_mutated_eifs_only_raise_eif_error_and_stay_small(fuzz_dir: Path, seed: int, count: int) -> None:
    # tracing every file would double the run time; every 4th one still covers thousands of files
    for k in range(_PER_EXAMPLE):
        sub = seed * _PER_EXAMPLE + k
        data = _mutate(_BASE, _random_ops(sub, 1 + (count + k - 1) % 4))
        try:
            _check_one(fuzz_dir, data, trace=sub % 4 == 0)
        except BaseException as exc:
            exc.add_note(f"mutated EIF {k} of seed {seed}: ops {_random_ops(sub, 1 + (count + k - 1) % 4)}")
            raise


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3))
def test_fuzz_measure_only_raises_eif_error(fuzz_dir: Path, seed: int, count: int) -> None:
    path = fuzz_dir / "fuzz-m.eif"
    data = _mutate(_BASE, _random_ops(seed, count))
    path.write_bytes(data)
    try:
        m = measure_eif(path)
    except EifError:
        return
    # whatever it accepted, it measured as nitro-cli does: PCR0 = SHA384(0^48 || SHA384(kernel, cmdline,
    # ramdisks in file order)), PCR1 over kernel, cmdline and the first ramdisk; computed here, inline
    eif = read_eif(path)
    parts = [data[s.data_offset : s.end] for s in eif.sections
             if s.type in (SectionType.KERNEL, SectionType.CMDLINE, SectionType.RAMDISK)]
    ramdisks = [data[s.data_offset : s.end] for s in eif.sections if s.type == SectionType.RAMDISK]

    def pcr(blob: bytes) -> str:
        return hashlib.sha384(b"\0" * 48 + hashlib.sha384(blob).digest()).hexdigest()

    assert m.pcr0 == pcr(b"".join(parts))
    first = [data[s.data_offset : s.end] for s in eif.sections if s.type in (SectionType.KERNEL, SectionType.CMDLINE)]
    assert m.pcr1 == pcr(b"".join(first + ramdisks[:1]))
    assert m.pcr2 == pcr(b"".join(ramdisks[1:]))


def test_deeply_nested_metadata_is_typed(tmp_path: Path) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    EifWriter().add(K, b"k").add(C, b"c").add(M, deep).add(R, b"r").write(tmp_path / "deep.eif")
    with pytest.raises(EifError) as err:
        read_eif(tmp_path / "deep.eif").metadata()
    assert err.value.problem == "bad metadata"
