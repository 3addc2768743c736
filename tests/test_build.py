"""build_eif from rootfs folders and saved image tarballs: layout, metadata, reproducibility, errors."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.eif.blobs import kernel_identity, load_blobs
from core.eif.build import BuildError, ImageSpecError, build_eif, read_image_spec
from core.eif.format import EifWriter, SectionType, read_eif
from core.eif.measure import measure_eif
from core.eif.sign import check_signature
from core.models import BuildRequest
from tests.test_eif_sign import make_cert
from tests.test_image import LAYERS, legacy_tarball, oci_tarball

T1 = "2024-05-01T12:00:00+00:00"


def make_rootfs(
    root: Path, order: tuple[str, ...] = ("bin/app", "etc/conf", "lib/x/y"), mtime: float = 1.0
) -> Path:
    files = {"bin/app": b"#!/bin/sh\necho built\n", "etc/conf": b"k=v\n", "lib/x/y": b"\0\1\2"}
    root.mkdir()
    for rel in order:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(files[rel])
        os.chmod(p, 0o755 if rel == "bin/app" else 0o644)
        os.utime(p, (mtime, mtime))
    (root / "bin" / "sh").symlink_to("app")
    return root


def rootfs_req(tmp: Path, root: Path, out: str = "app.eif", **kw: object) -> BuildRequest:
    return BuildRequest(
        output_file=str(tmp / out),
        rootfs=str(root),
        cmd="/bin/app 'two words' ''",
        env=["A=1", "B=x y"],
        **kw,
    )  # type: ignore[arg-type]


def test_rootfs_build_layout_and_metadata(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "root")
    lines: list[str] = []
    result = build_eif(
        rootfs_req(tmp_path, root, name="demo", version="7"), build_time=T1, progress=lines.append
    )
    assert lines == ["Start building the Enclave Image...", "Enclave Image successfully created."]
    eif = read_eif(result.output_file)
    assert eif.crc_ok
    assert [s.type for s in eif.sections] == [
        SectionType.KERNEL,
        SectionType.CMDLINE,
        SectionType.METADATA,
        SectionType.RAMDISK,
        SectionType.RAMDISK,
    ]
    b = load_blobs()
    assert eif.cmdline().encode() == b.cmdline and b"\0" not in b.cmdline
    assert b"".join(eif.iter_section(eif.kernel)) == b.kernel.read_bytes()
    meta = eif.metadata()
    assert meta is not None and list(meta) == [
        "ImageName",
        "ImageVersion",
        "BuildMetadata",
        "DockerInfo",
        "CustomMetadata",
    ]
    assert (meta["ImageName"], meta["ImageVersion"]) == ("demo", "7")
    assert meta["BuildMetadata"] == {
        "BuildTime": T1,
        "BuildTool": "nitrodeck",
        "BuildToolVersion": "0.1.0",
        "OperatingSystem": "Linux",
        "KernelVersion": "4.14.256",
    }
    assert meta["DockerInfo"]["Config"]["Cmd"] == ["/bin/app", "two words", ""]
    raw_meta = b"".join(eif.iter_section(eif.metadata_section))  # type: ignore[arg-type]
    assert b": " not in raw_meta and b", " not in raw_meta.replace(b"x y", b"")  # compact JSON
    assert result.measurements == measure_eif(result.output_file)

    spec = read_image_spec(result.output_file, tmp_path / "unpacked")
    assert spec.cmd == ["/bin/app", "two words", ""] and spec.env == ["A=1", "B=x y"]
    assert (spec.rootfs / "etc/conf").read_bytes() == b"k=v\n"
    assert os.readlink(spec.rootfs / "bin/sh") == "app"
    assert stat.S_IMODE((spec.rootfs / "bin/app").stat().st_mode) == 0o755
    out = subprocess.run([str(spec.rootfs / "bin/app")], capture_output=True, text=True, timeout=10)
    assert out.stdout == "built\n"


def test_bit_identical_rebuilds(tmp_path: Path) -> None:
    a = make_rootfs(tmp_path / "a", ("bin/app", "etc/conf", "lib/x/y"), mtime=1.0)
    b = make_rootfs(tmp_path / "b", ("lib/x/y", "etc/conf", "bin/app"), mtime=2_000_000_000.0)
    if os.geteuid() == 0:
        os.chown(b / "etc/conf", 1000, 1000)
    os.chmod(b, 0o700)
    r1 = build_eif(rootfs_req(tmp_path, a, "1.eif", name="n"), build_time=T1)
    r2 = build_eif(rootfs_req(tmp_path, a, "2.eif", name="n"), build_time=T1)
    r3 = build_eif(rootfs_req(tmp_path, b, "3.eif", name="n"), build_time=T1)
    one = Path(r1.output_file).read_bytes()
    assert one == Path(r2.output_file).read_bytes() == Path(r3.output_file).read_bytes()
    # another build time changes only the metadata, never the PCRs
    r4 = build_eif(rootfs_req(tmp_path, a, "4.eif", name="n"), build_time="2030-01-01T00:00:00+00:00")
    assert Path(r4.output_file).read_bytes() != one and r4.measurements == r1.measurements
    # and a content change does change PCR0/PCR2 but not PCR1 (kernel + cmdline + bootstrap only)
    (a / "etc/conf").write_bytes(b"k=w\n")
    r5 = build_eif(rootfs_req(tmp_path, a, "5.eif", name="n"), build_time=T1)
    assert r5.measurements.pcr1 == r1.measurements.pcr1
    assert r5.measurements.pcr0 != r1.measurements.pcr0 and r5.measurements.pcr2 != r1.measurements.pcr2


def test_source_date_epoch_and_default_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_rootfs(tmp_path / "root")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    r = build_eif(rootfs_req(tmp_path, root))
    meta = read_eif(r.output_file).metadata()
    assert meta is not None
    assert meta["BuildMetadata"]["BuildTime"] == "2023-11-14T22:13:20+00:00"
    assert meta["ImageName"] == "root" and len(meta["ImageVersion"]) == 64
    r2 = build_eif(rootfs_req(tmp_path, root, "again.eif"))
    assert Path(r2.output_file).read_bytes() == Path(r.output_file).read_bytes()


def test_custom_metadata(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "root")
    meta_file = tmp_path / "meta.json"
    meta_file.write_text(json.dumps({"team": "payments", "ticket": 42}))
    r = build_eif(rootfs_req(tmp_path, root, metadata=str(meta_file)), build_time=T1)
    meta = read_eif(r.output_file).metadata()
    assert meta is not None and meta["CustomMetadata"] == {"team": "payments", "ticket": 42}


@pytest.mark.parametrize(
    "change,code,text",
    [
        ({"rootfs": "/nonexistent/rootfs"}, "E19", "cannot be read"),
        ({"cmd": ""}, "E48", "no CMD or ENTRYPOINT"),
        ({"cmd": "/bin/app 'unclosed"}, "E48", "cannot split"),
        ({"env": ["NOEQUALS"]}, "E48", "is not K=V"),
        ({"env": ["A=line\nbreak"]}, "E48", "newline"),
        ({"image_tar": "/x.tar"}, "E48", "exactly one image source"),
        ({"output_file": "/nonexistent/dir/x.eif"}, "E19", "Could not create output file"),
        ({"metadata": "/nonexistent/meta.json"}, "E19", "cannot read the metadata file"),
        ({"signing_certificate": "/c.pem"}, "E60", "both a certificate and a private key"),
    ],
)
def test_build_errors(tmp_path: Path, change: dict[str, object], code: str, text: str) -> None:
    root = make_rootfs(tmp_path / "root")
    req = rootfs_req(tmp_path, root)
    for key, value in change.items():
        setattr(req, key, value)
    with pytest.raises(BuildError) as err:
        build_eif(req, build_time=T1)
    assert err.value.cli_code == code and text in err.value.message
    assert not (tmp_path / "app.eif").exists()


def test_metadata_file_limits(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "root")
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"x": "y" * 5000}))
    with pytest.raises(BuildError, match="larger than 4096 bytes") as err:
        build_eif(rootfs_req(tmp_path, root, metadata=str(big)), build_time=T1)
    assert err.value.cli_code == "E48" and err.value.where == str(big)
    bad = tmp_path / "bad.json"
    for text in ("{oops", "[" * 2048 + "]" * 2048):
        bad.write_text(text)
        with pytest.raises(BuildError, match="not JSON"):
            build_eif(rootfs_req(tmp_path, root, metadata=str(bad)), build_time=T1)


def test_signed_build(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "root")
    cert, key, _ = make_cert(tmp_path)
    r = build_eif(
        rootfs_req(tmp_path, root, signing_certificate=str(cert), private_key=str(key)), build_time=T1
    )
    assert r.measurements.pcr8 is not None
    info = check_signature(r.output_file)
    assert info.ok and info.pcr8 == r.measurements.pcr8
    plain = build_eif(rootfs_req(tmp_path, root, "plain.eif"), build_time=T1)
    assert plain.measurements.pcr0 == r.measurements.pcr0 and plain.measurements.pcr8 is None
    junk = tmp_path / "junk.key"
    junk.write_text("nope")
    with pytest.raises(BuildError) as err:
        build_eif(rootfs_req(tmp_path, root, "bad.eif", signing_certificate=str(cert), private_key=str(junk)))
    assert err.value.cli_code == "E60" and not (tmp_path / "bad.eif").exists()


@pytest.mark.parametrize("layout", ["legacy", "oci"])
def test_build_from_image_tarball(tmp_path: Path, layout: str) -> None:
    tarball = tmp_path / "img.tar"
    (legacy_tarball if layout == "legacy" else oci_tarball)(tarball, LAYERS)
    r = build_eif(BuildRequest(output_file=str(tmp_path / "t.eif"), image_tar=str(tarball)), build_time=T1)
    meta = read_eif(r.output_file).metadata()
    assert meta is not None
    assert meta["DockerInfo"]["Id"] == "sha256:" + meta["ImageVersion"]
    assert meta["DockerInfo"]["Config"]["Entrypoint"] == ["/bin/app"]
    spec = read_image_spec(r.output_file, tmp_path / "u")
    assert spec.cmd == ["/bin/app", "--serve", "8000"] and spec.env == ["PATH=/bin", "MODE=test"]
    assert (spec.rootfs / "bin/app").read_text() == "v2" and not (spec.rootfs / "etc/old.conf").exists()
    with pytest.raises(BuildError) as err:
        build_eif(BuildRequest(output_file=str(tmp_path / "x.eif"), image_tar=str(tmp_path / "none.tar")))
    assert err.value.cli_code == "E19"


def test_read_image_spec_needs_a_customer_ramdisk(tmp_path: Path) -> None:
    path = tmp_path / "one.eif"
    EifWriter().add(SectionType.KERNEL, b"k").add(SectionType.CMDLINE, b"c").add(
        SectionType.RAMDISK, b"r"
    ).write(path)
    with pytest.raises(ImageSpecError, match="no customer ramdisk"):
        read_image_spec(path, tmp_path / "o")


def test_blobs_real_folder_and_stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NITRO_CLI_BLOBS", str(tmp_path / "nothing"))
    stand_in = load_blobs()
    assert stand_in.stand_in and b"stand-in" in stand_in.kernel.read_bytes()
    assert stand_in.cmdline.startswith(b"reboot=k panic=30 pci=off nomodules console=ttyS0")
    assert stand_in.os_and_kernel() == ("Linux", "4.14.256")
    real = tmp_path / "blobs"
    real.mkdir()
    (real / "Image").write_bytes(b"arm kernel")
    (real / "cmdline").write_text("  console=ttyS0 \n")
    (real / "init").write_bytes(b"init")
    (real / "Image.config").write_text("#\n#\n# Linux/arm64 5.10.1-1.amzn2.aarch64 Kernel Configuration\n")
    monkeypatch.setenv("NITRO_CLI_BLOBS", str(real))
    got = load_blobs()
    assert not got.stand_in and got.arch == "aarch64" and got.eif_flags == 1
    assert got.cmdline == b"console=ttyS0" and got.nsm_ko is None
    assert got.os_and_kernel() == ("Linux", "5.10.1")
    assert kernel_identity(None) == ("Unknown", "Unknown")
    from emulator.backend import STAND_IN_BLOBS

    assert STAND_IN_BLOBS.is_dir()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_kernel_identity(text: str) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".config") as fh:
        fh.write(text)
        fh.flush()
        os_name, version = kernel_identity(Path(fh.name))
    assert isinstance(os_name, str) and isinstance(version, str)
    lines = text.split("\n")
    if len(lines) >= 3 and len(re.split(r"[ /-]", lines[2])) >= 4 and "\r" not in text:
        assert os_name == re.split(r"[ /-]", lines[2])[1]


def test_unreachable_docker_engine_is_e50(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    with pytest.raises(BuildError) as err:
        build_eif(BuildRequest(output_file=str(tmp_path / "d.eif"), docker_uri="anything:latest"))
    assert err.value.cli_code == "E50" and "cannot reach the Docker engine" in err.value.message
    assert not (tmp_path / "d.eif").exists()


def test_rootfs_with_escaping_symlink_is_refused(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "root")
    (root / "lib" / "up").symlink_to("../../../etc/passwd")
    with pytest.raises(BuildError, match="points outside the tree") as err:
        build_eif(rootfs_req(tmp_path, root), build_time=T1)
    assert err.value.cli_code == "E48" and err.value.where == "cpio entry 'rootfs/lib/up'"
