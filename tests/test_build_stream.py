"""The one-pass build (issue 13): the customer ramdisk streamed into the EIF with its digests computed
on the way gives the same bytes and PCRs as writing the ramdisk, then the EIF, then measuring it; the
pieces it is made of (DigestingWriter, crc32_combine, the planned cpio, the image span copy) each
against their plain counterparts."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import threading
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.eif import cpio
from core.eif.blobs import load_blobs
from core.eif.build import build_eif
from core.eif.format import EifWriter, SectionType, read_eif
from core.eif.image import ImageError, flatten_tarball
from core.eif.measure import measure_eif
from core.eif.stream import Crc32, DigestingWriter, OutputFailed, crc32_combine
from core.models import BuildRequest
from tests.test_image import LAYERS, _add, legacy_tarball

T1 = "2024-05-01T12:00:00+00:00"


def make_tree(root: Path) -> Path:
    """Big files across buffer boundaries, many small ones, empty ones, links, odd permissions."""
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "usr" / "lib" / "big.so").write_bytes(os.urandom(9 * 1024 * 1024 + 3))
    (root / "usr" / "lib" / "exact").write_bytes(os.urandom(4 * 1024 * 1024))
    (root / "usr" / "lib" / "empty").write_bytes(b"")
    (root / "usr" / "lib" / "link.so").symlink_to("big.so")
    for i in range(400):
        folder = root / "etc" / f"d{i % 9}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.conf").write_bytes(os.urandom(i * 31 % 3000))
    private = root / "srv" / "private"
    private.mkdir(parents=True)
    private.chmod(0o700)
    (private / "key").write_bytes(b"k")
    (private / "key").chmod(0o600)
    (root / "app").mkdir()
    (root / "app" / "run.sh").write_text("#!/bin/sh\nexec sleep 1\n")
    (root / "app" / "run.sh").chmod(0o755)
    (root / "app" / "näme ü").write_text("unicode")
    return root


def reference_eif(path: Path, root: Path, metadata: bytes) -> None:
    """The EIF as nitrodeck wrote it before issue 13: each ramdisk written whole, then the EIF from them."""
    blobs = load_blobs()
    rd0, rd1 = io.BytesIO(), io.BytesIO()
    boot = [cpio.regular("init", blobs.init, 0o755)]
    if blobs.nsm_ko is not None:
        boot.append(cpio.regular("nsm.ko", blobs.nsm_ko, 0o644))
    cpio.write_archive(rd0, boot)
    customer = [*cpio.tree_entries(root, "rootfs"), cpio.regular("cmd", b"/app/run.sh\n"), cpio.regular("env", b"A=1\n")]
    cpio.write_archive(rd1, customer)
    writer = EifWriter(flags=blobs.eif_flags)
    writer.add(SectionType.KERNEL, blobs.kernel).add(SectionType.CMDLINE, blobs.cmdline)
    writer.add(SectionType.METADATA, metadata).add(SectionType.RAMDISK, rd0.getvalue())
    writer.add(SectionType.RAMDISK, rd1.getvalue())
    writer.write(path)


@pytest.mark.parametrize("version", [None, "1.2.3"])
def test_streamed_build_equals_the_reference(tmp_path: Path, version: str | None) -> None:
    root = make_tree(tmp_path / "root")
    out = tmp_path / "app.eif"
    req = BuildRequest(output_file=str(out), rootfs=str(root), cmd="/app/run.sh", env=["A=1"], version=version)
    result = build_eif(req, build_time=T1)
    with read_eif(out) as eif:
        meta_section = next(s for s in eif.sections if s.type == SectionType.METADATA)
        metadata = eif.source.pread(meta_section.size, meta_section.data_offset)
        assert eif.crc_ok  # the CRC joined from the pieces' is the file's
    ref = tmp_path / "ref.eif"
    reference_eif(ref, root, metadata)
    assert out.read_bytes() == ref.read_bytes()
    assert result.measurements == measure_eif(ref) == measure_eif(out)
    if version is None:
        # ImageVersion is the SHA-256 of the customer ramdisk, computed while it was streamed
        with read_eif(ref) as eif:
            rd1 = eif.ramdisks[-1]
            digest = hashlib.sha256(eif.source.pread(rd1.size, rd1.data_offset)).hexdigest()
        assert json.loads(metadata)["ImageVersion"] == digest
    else:
        assert json.loads(metadata)["ImageVersion"] == version


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300), st.integers(0, 1 << 20))
def test_crc32_combine_is_zlibs(a: bytes, b: bytes, zeros: int) -> None:
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
    pad = bytes(zeros)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(pad), zeros) == zlib.crc32(a + pad)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 70_000)), max_size=12), st.integers(1, 5))
def test_digesting_writer_writes_and_digests_every_byte(
    tmp_path_factory: pytest.TempPathFactory, pieces: list[tuple[bool, int]], buffers: int
) -> None:
    work = tmp_path_factory.mktemp("dw")
    expected = bytearray()
    sha, crc = hashlib.sha384(), Crc32(0)
    fd = os.open(work / "out", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with DigestingWriter(fd, 7, [sha.update, crc.update], buffer_size=65536, buffers=buffers) as writer:
            for from_file, size in pieces:
                data = os.urandom(size)
                if from_file:
                    (work / "src").write_bytes(data)
                    src = os.open(work / "src", os.O_RDONLY)
                    try:
                        assert writer.copy_from(src, size + 5) == size  # short at end of file
                    finally:
                        os.close(src)
                else:
                    writer.write(data)
                expected += data
        assert writer.written == len(expected)
        assert os.pread(fd, len(expected) + 10, 7) == bytes(expected)
    finally:
        os.close(fd)
    assert sha.digest() == hashlib.sha384(expected).digest() and crc.value == zlib.crc32(expected)


def test_digesting_writer_failures_stop_its_threads(tmp_path: Path) -> None:
    before = threading.active_count()
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OutputFailed) as info, DigestingWriter(full, 0, [hashlib.sha256().update], buffer_size=4096) as w:
            w.write(b"x" * 10_000)
        assert info.value.error.strerror  # ENOSPC, for the build's "cannot write the EIF"
    finally:
        os.close(full)

    def broken(_data: memoryview) -> None:
        raise ValueError("digest broke")

    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with pytest.raises(ValueError, match="digest broke"), DigestingWriter(fd, 0, [broken]) as w:
            w.write(b"data")
    finally:
        os.close(fd)
    assert threading.active_count() == before


def test_planned_size_is_what_is_streamed_and_a_changed_file_is_refused(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "root")
    ordered, size = cpio.plan_archive(cpio.tree_entries(root, "rootfs"))
    plain = io.BytesIO()
    cpio.write_archive(plain, list(cpio.tree_entries(root, "rootfs")))
    assert size == len(plain.getvalue())
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with DigestingWriter(fd, 0, []) as writer:
            cpio.stream_archive(writer, ordered)
        assert os.pread(fd, size + 1, 0) == plain.getvalue()
        (root / "usr" / "lib" / "big.so").write_bytes(b"shorter now")
        with pytest.raises(cpio.CpioError, match="changed size while archiving"), DigestingWriter(fd, 0, []) as writer:
            cpio.stream_archive(writer, ordered)
    finally:
        os.close(fd)


def tree_of(root: Path) -> dict[str, tuple[int, bytes]]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        body = os.readlink(path).encode() if stat.S_ISLNK(st.st_mode) else (path.read_bytes() if path.is_file() else b"")
        out[str(path.relative_to(root))] = (st.st_mode, body)
    return out


def test_saved_image_layers_copied_from_the_file_equal_tarfiles(tmp_path: Path) -> None:
    """An uncompressed layer in an uncompressed saved image is copied out of the image file by the
    kernel; the tree is the one tarfile's own reading gives (a gzip layer takes that path)."""
    big = io.BytesIO()
    with tarfile.open(fileobj=big, mode="w") as tar:
        _add(tar, "data/blob", os.urandom(3 * 1024 * 1024 + 1))
    layers = [*LAYERS, big.getvalue()]
    plain = flatten_tarball(legacy_tarball(tmp_path / "plain.tar", layers), tmp_path / "a")
    gzipped = flatten_tarball(legacy_tarball(tmp_path / "gz.tar", [gzip.compress(x, mtime=0) for x in layers]), tmp_path / "b")
    assert plain.argv == gzipped.argv and (tmp_path / "a" / "data" / "blob").stat().st_size == 3 * 1024 * 1024 + 1
    assert tree_of(tmp_path / "a") == tree_of(tmp_path / "b")


def test_a_layer_cut_short_is_corrupt(tmp_path: Path) -> None:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        _add(tar, "big", os.urandom(200_000))
    cut = data.getvalue()[:100_000]  # the file's header promises more than the layer holds
    with pytest.raises(ImageError, match="corrupt"):
        flatten_tarball(legacy_tarball(tmp_path / "cut.tar", [cut]), tmp_path / "root")
