"""newc cpio: byte-reproducible writer, round trip, and a reader that refuses hostile archives."""

from __future__ import annotations

import gzip
import io
import os
import stat
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.eif import cpio
from core.eif.cpio import CpioEntry, CpioError, CpioWriter


def archive(entries: list[CpioEntry], sort: bool = True) -> bytes:
    out = io.BytesIO()
    if sort:
        cpio.write_archive(out, entries, mtime=1700000000)
    else:  # raw order, for crafting hostile archives
        w = CpioWriter(out)
        for e in entries:
            w.add(e)
        w.finish()
    return out.getvalue()


def parse_headers(data: bytes) -> list[tuple[str, list[int]]]:
    """An independent minimal newc parser, to check the writer's bytes field by field."""
    pos, out = 0, []
    while True:
        assert data[pos : pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, size = fields[11], fields[6]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        out.append((name, fields))
        pos += 110 + namesize
        pos += (-pos) % 4
        pos += size + (-size) % 4
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out


def sample(tmp: Path) -> list[CpioEntry]:
    big = tmp / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    return [
        cpio.regular("rootfs/bin/app", b"#!/bin/sh\necho hi\n", 0o755),
        cpio.directory("rootfs"),
        cpio.directory("rootfs/bin"),
        cpio.symlink("rootfs/bin/sh", "/bin/app"),
        cpio.regular("rootfs/data/big.bin", big),
        cpio.directory("rootfs/data", 0o700),
        cpio.regular("cmd", b"/bin/app\n"),
    ]


def test_format_fields_and_alignment(tmp_path: Path) -> None:
    data = archive(sample(tmp_path))
    headers = parse_headers(data)
    names = [n for n, _ in headers]
    assert names == sorted(names[:-1], key=str.encode) + ["TRAILER!!!"]
    for idx, (name, f) in enumerate(headers[:-1]):
        ino, mode, uid, gid, nlink, mtime = f[:6]
        assert ino == idx + 1 and uid == 0 and gid == 0 and mtime == 1700000000
        if name == "rootfs/bin/app":
            assert mode == stat.S_IFREG | 0o755 and f[6] == 18 and nlink == 1
        if name == "rootfs/bin/sh":
            assert stat.S_ISLNK(mode)
    assert len(data) % 4 == 0


def test_order_and_host_details_do_not_matter(tmp_path: Path) -> None:
    entries = sample(tmp_path)
    assert archive(entries) == archive(list(reversed(entries)))
    with pytest.raises(CpioError, match="duplicate"):
        archive(entries + [cpio.directory("rootfs")])


def _make_tree(root: Path, order: list[str], mtime: float) -> None:
    root.mkdir()
    files = {"etc/motd": b"hello\n", "bin/app": b"\x7fELF...", "var/lib/x/y": b"deep"}
    for rel in order:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(files[rel])
        os.chmod(p, 0o755 if rel.startswith("bin") else 0o644)
        os.utime(p, (mtime, mtime))
    (root / "bin" / "sh").symlink_to("app")


def test_tree_entries_reproducible_across_hosts(tmp_path: Path) -> None:
    _make_tree(tmp_path / "a", ["etc/motd", "bin/app", "var/lib/x/y"], time.time())
    _make_tree(tmp_path / "b", ["var/lib/x/y", "bin/app", "etc/motd"], 1000.0)
    os.chown(tmp_path / "b" / "etc" / "motd", 1234, 4321) if os.geteuid() == 0 else None
    os.chmod(tmp_path / "b", 0o700)  # the top folder's mode is fixed, not copied
    a = archive(list(cpio.tree_entries(tmp_path / "a", "rootfs")))
    b = archive(list(cpio.tree_entries(tmp_path / "b", "rootfs")))
    assert a == b


def test_round_trip_extract(tmp_path: Path) -> None:
    entries = sample(tmp_path)
    data = archive(entries)
    dest = tmp_path / "out"
    result = cpio.extract(io.BytesIO(data), dest)
    assert (result.files, result.dirs, result.symlinks) == (3, 3, 1)
    assert (dest / "rootfs/bin/app").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE((dest / "rootfs/bin/app").stat().st_mode) == 0o755
    assert os.readlink(dest / "rootfs/bin/sh") == "/bin/app"
    assert (dest / "rootfs/data/big.bin").read_bytes() == (tmp_path / "big.bin").read_bytes()
    members = cpio.list_members(io.BytesIO(data))
    assert [m.name for m in members] == sorted(e.name for e in entries)
    # gzip-compressed ramdisks (linuxkit writes them) are read transparently
    again = tmp_path / "gz"
    cpio.extract(io.BytesIO(gzip.compress(data, mtime=0)), again)
    assert (again / "cmd").read_bytes() == b"/bin/app\n"


@pytest.mark.parametrize(
    "name,text",
    [
        ("../evil", "path traversal"),
        ("rootfs/../../evil", "path traversal"),
        ("/etc/evil", "absolute path"),
    ],
)
def test_traversal_names_refused(tmp_path: Path, name: str, text: str) -> None:
    data = archive([cpio.regular(name, b"x")], sort=False)
    with pytest.raises(CpioError, match=text) as err:
        cpio.extract(io.BytesIO(data), tmp_path / "out")
    assert err.value.where == f"cpio entry {name!r}"
    assert not (tmp_path / "evil").exists()


def test_write_through_symlink_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = archive([cpio.symlink("link", str(outside)), cpio.regular("link/pwned", b"x")], sort=False)
    with pytest.raises(CpioError, match="through a symlink"):
        cpio.extract(io.BytesIO(data), tmp_path / "out")
    assert not (outside / "pwned").exists()


@pytest.mark.parametrize("target", ["", "etc\0passwd", "\0"])
def test_symlink_with_an_empty_target_or_a_nul_is_a_cpio_error(tmp_path: Path, target: str) -> None:
    # found by the cpio fuzzer once it checked what extraction leaves behind: os.symlink raised
    # ValueError (embedded null byte) or FileNotFoundError (empty target) instead of a typed refusal
    data = archive([cpio.symlink("link", target)], sort=False)
    with pytest.raises(CpioError, match="symlink with an empty target or a NUL byte") as err:
        cpio.extract(io.BytesIO(data), tmp_path / "out")
    assert err.value.where == "cpio entry 'link'"
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("entry", [cpio.symlink("aXb", "x"), cpio.regular("aXb", b"x"), cpio.directory("aXb")])
def test_a_nul_inside_a_name_is_a_cpio_error(tmp_path: Path, entry: cpio.CpioEntry) -> None:
    # the fuzzer's find (good.cpio, seed 627): os.symlink raised ValueError on the name. The writer refuses
    # such a name, so the X is replaced in the bytes (same length: the header's namesize still holds)
    data = archive([entry], sort=False)
    assert data.count(b"aXb\0") == 1
    data = data.replace(b"aXb\0", b"a\0b\0")
    with pytest.raises(CpioError, match="NUL byte inside an archive name"):
        cpio.extract(io.BytesIO(data), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_climbing_symlink_refused_and_file_over_link_replaces_it(tmp_path: Path) -> None:
    data = archive([cpio.symlink("a/b/up", "../../../etc")], sort=False)
    with pytest.raises(CpioError, match="outside the archive root"):
        cpio.extract(io.BytesIO(data), tmp_path / "o1")
    target = tmp_path / "victim"
    target.write_text("keep")
    data = archive([cpio.symlink("f", str(target)), cpio.regular("f", b"new")], sort=False)
    cpio.extract(io.BytesIO(data), tmp_path / "o2")
    assert target.read_text() == "keep"
    assert (tmp_path / "o2" / "f").read_bytes() == b"new"


def test_device_nodes_skipped_and_setuid_dropped(tmp_path: Path) -> None:
    data = archive(
        [
            CpioEntry("dev/null", stat.S_IFCHR | 0o666, b"", os.makedev(1, 3)),
            CpioEntry("bin/su", stat.S_IFREG | 0o4755, b"su"),
        ]
    )
    result = cpio.extract(io.BytesIO(data), tmp_path / "out")
    assert result.skipped == ["dev/null"]
    assert not (tmp_path / "out/dev/null").exists()
    assert stat.S_IMODE((tmp_path / "out/bin/su").stat().st_mode) == 0o755


def test_limits_and_corruption(tmp_path: Path) -> None:
    data = archive([cpio.regular(f"f{i}", b"x") for i in range(10)])
    with pytest.raises(CpioError, match="more than 5 entries"):
        list(cpio.CpioReader(io.BytesIO(data), max_entries=5).members())
    with pytest.raises(CpioError, match="over the 100-byte limit"):
        list(cpio.CpioReader(io.BytesIO(archive([cpio.regular("f", b"y" * 101)])), max_file=100).members())
    with pytest.raises(CpioError, match="archive ends inside"):
        cpio.list_members(io.BytesIO(data[:-40]))
    with pytest.raises(CpioError, match="bad entry magic"):
        cpio.list_members(io.BytesIO(b"070707" + data[6:]))
    with pytest.raises(CpioError, match="archive ends"):
        cpio.extract(io.BytesIO(data), tmp_path / "o", max_total=100)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 700))
def test_fuzz_reader_only_typed_errors(noise: bytes, cut: int) -> None:
    base = archive([cpio.regular("a/b", b"data"), cpio.symlink("a/c", "b"), cpio.directory("a")])
    for data in (noise, base[:cut] + noise, base[:cut] + noise[:10] + base[cut + 10 :]):
        try:
            cpio.list_members(io.BytesIO(data))
        except CpioError:
            pass
