"""Issue 9 items 1 and 2: measure what runs, and never replace what is not ours.

Each test swaps, rewrites or kills at the moment that used to break things, and asserts what the
operator is told matches what exists (PCRs of the image that runs, the file that was published).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.eif.build import BuildError, build_eif, clean_stale_work_dirs
from core.eif.format import EifError, read_eif, read_eif_private
from core.eif.measure import measure, measure_eif
from core.errors import NitrodeckError
from core.files import (
    NotRegularFile,
    OutputBusy,
    atomic_output,
    clean_stale_temps,
    open_regular,
    output_lock,
    read_limited,
    write_atomic,
)
from tests.conftest import is_root, require
from tests.test_build import T1, make_rootfs, rootfs_req
from tests.test_emulator_run import REPO, build, configure, emu, run

HOOKS = Path(__file__).resolve().parent / "hooks"


def other_rootfs(root: Path) -> Path:
    """A rootfs whose customer ramdisk (and so PCR0/PCR2) differs from make_rootfs's."""
    make_rootfs(root)
    (root / "etc" / "conf").write_bytes(b"k=other\n")
    return root


def _with_hook(hook: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HOOKS), str(REPO), env.get("PYTHONPATH")) if p)
    env["ND_TEST_HOOK"] = hook
    return env


# --- item 1: measure what runs --------------------------------------------------------------------


def test_launch_runs_the_image_it_measured_when_the_file_is_swapped(nd_home: Path) -> None:
    """The supervisor renames image B over the launched path right after measuring A (a hook in its
    own process): the enclave must run A and attest A, never attest A while running B."""
    configure(nd_home)
    eif_a = build(nd_home, "echo running-image-A\nexec sleep 300", "imga")
    eif_b = build(nd_home, "echo running-image-B\nexec sleep 300", "imgb")
    pcrs_a, pcrs_b = measure_eif(eif_a), measure_eif(eif_b)
    assert pcrs_a.pcr0 != pcrs_b.pcr0
    res = subprocess.run(
        [sys.executable, "-m", "emulator", "run-enclave", "--eif-path", str(eif_a), "--memory", "64",
         "--cpu-count", "2", "--debug-mode"],  # only debug-mode enclaves have a console
        capture_output=True, text=True, cwd=REPO, timeout=90, env=_with_hook(f"swap-after-measure:{eif_b}:{eif_a}"),
    )
    assert res.returncode == 0, res.stderr
    assert not eif_b.exists()  # the hook did swap the file during the launch
    enclave_id = json.loads(res.stdout)["EnclaveID"]
    [item] = json.loads(emu("describe-enclaves").stdout)
    assert item["Measurements"]["PCR0"] == pcrs_a.pcr0
    console = nd_home / "emulator" / "console" / f"{enclave_id}.log"
    from tests.conftest import wait_for

    wait_for(lambda: console.exists() and "running-image-" in console.read_text(), timeout=20)
    text = console.read_text()
    assert "running-image-A" in text and "running-image-B" not in text
    emu("terminate-enclave", "--all")


def test_describe_reads_one_open_file_when_the_path_is_replaced(tmp_path: Path) -> None:
    a = build_eif(rootfs_req(tmp_path, make_rootfs(tmp_path / "ra"), "a.eif", name="a"), build_time=T1)
    b = build_eif(rootfs_req(tmp_path, other_rootfs(tmp_path / "rb"), "b.eif", name="b"), build_time=T1)
    assert a.measurements != b.measurements
    path = Path(a.output_file)
    with read_eif(path) as eif:
        os.replace(b.output_file, path)  # renamed over the path after it was opened
        assert measure(eif) == a.measurements
        assert eif.metadata()["ImageName"] == "a"  # type: ignore[index]
        assert eif.crc_ok


def test_in_place_rewrite_while_reading_is_refused(tmp_path: Path) -> None:
    a = build_eif(rootfs_req(tmp_path, make_rootfs(tmp_path / "ra"), "a.eif"), build_time=T1)
    path = Path(a.output_file)
    with read_eif(path) as eif:
        with open(path, "r+b") as fh:  # same inode, new bytes in the customer ramdisk
            fh.seek(eif.ramdisks[-1].data_offset + 10)
            fh.write(b"tampered")
        with pytest.raises(EifError) as err:
            measure(eif)
    assert err.value.problem == "changed"


def test_private_copy_is_what_is_measured_and_unpacked(tmp_path: Path) -> None:
    from core.eif.build import read_image_spec

    a = build_eif(rootfs_req(tmp_path, make_rootfs(tmp_path / "ra"), "a.eif"), build_time=T1)
    path = Path(a.output_file)
    private = tmp_path / "private"
    private.mkdir()
    with read_eif_private(path, private) as eif:
        path.write_bytes(b"not an eif any more")  # in place, after the copy
        assert measure(eif) == a.measurements
        spec = read_image_spec(eif, tmp_path / "unpacked")
    assert spec.cmd == ["/bin/app", "two words", ""]
    assert list(private.iterdir()) == []  # the copy had no name


def test_build_reports_pcrs_of_what_it_published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another image is renamed over the output the moment after the build publishes it: the build
    must report the PCRs of the file it wrote, not of whatever the path holds when it looks again."""
    other = build_eif(rootfs_req(tmp_path, other_rootfs(tmp_path / "ro"), "other.eif", name="o"),
                      build_time="2020-01-01T00:00:00+00:00")
    root = make_rootfs(tmp_path / "root")
    twin = build_eif(rootfs_req(tmp_path, root, "twin.eif", name="x"), build_time=T1)
    real_replace = os.replace
    target = tmp_path / "app.eif"

    def replace_then_swap(src: object, dst: object) -> None:
        real_replace(src, dst)  # type: ignore[arg-type]
        if Path(str(dst)) == target and Path(other.output_file).exists():
            real_replace(other.output_file, target)

    monkeypatch.setattr(os, "replace", replace_then_swap)
    result = build_eif(rootfs_req(tmp_path, root, "app.eif", name="x"), build_time=T1)
    assert result.measurements == twin.measurements  # what was built (bit-identical twin)
    assert measure_eif(target) == other.measurements != twin.measurements  # the swap did happen


# --- item 2: never replace what is not ours -----------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "symlink", "folder", "device"])
def test_build_refuses_an_output_that_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out.eif"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "symlink":
        out.symlink_to(victim)
    elif kind == "folder":
        out.mkdir()
    else:
        require(is_root(), "mknod needs root")
        os.mknod(out, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a private /dev/null
    before = os.lstat(out)
    with pytest.raises(BuildError) as err:
        build_eif(rootfs_req(tmp_path, make_rootfs(tmp_path / "root"), "out.eif"), build_time=T1)
    assert err.value.cli_code == "E48" and "refusing to replace" in err.value.message
    after = os.lstat(out)
    assert (after.st_ino, stat.S_IFMT(after.st_mode)) == (before.st_ino, stat.S_IFMT(before.st_mode))
    assert victim.read_bytes() == b"keep me"


def test_nitro_emu_build_refuses_a_device_output(nd_home: Path) -> None:
    require(is_root(), "mknod needs root")
    dev = nd_home / "null"
    os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    rootfs = make_rootfs(nd_home / "root")
    res = emu("build-enclave", "--rootfs", str(rootfs), "--cmd", "/bin/app", "--output-file", str(dev))
    assert res.returncode == 48, res.stderr
    log = re.search(r'error log found at "([^"]+)"', res.stderr)
    assert log and "refusing to replace" in Path(log.group(1)).read_text()
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


def test_regular_output_is_still_replaced_atomically(tmp_path: Path) -> None:
    out = tmp_path / "app.eif"
    out.write_bytes(b"old")
    old_ino = out.stat().st_ino
    result = build_eif(rootfs_req(tmp_path, make_rootfs(tmp_path / "root")), build_time=T1)
    assert out.stat().st_ino != old_ino and measure_eif(out) == result.measurements
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.eif", "root"]


def test_kill_9_mid_build_leaves_nothing_a_later_build_does_not_clean(tmp_path: Path) -> None:
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    rootfs = make_rootfs(tmp_path / "root")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = _with_hook("kill-mid-write")
    env["TMPDIR"] = str(tmp)
    env["NITRODECK_HOME"] = str(tmp_path / "home")
    res = subprocess.run(
        [sys.executable, "-m", "emulator", "build-enclave", "--rootfs", str(rootfs), "--cmd", "/bin/app",
         "--output-file", str(out_dir / "app.eif")],
        capture_output=True, text=True, cwd=REPO, timeout=120, env=env,
    )
    assert res.returncode == -9, res.stderr
    assert list(out_dir.iterdir()) == []  # the half-written EIF had no name (O_TMPFILE)
    left = [p.name for p in tmp.iterdir() if not p.name.startswith("nitrodeck-locks-")]
    assert left and all(name.startswith("nd-build-") for name in left)  # the killed build's work folder
    removed = clean_stale_work_dirs(str(tmp))  # what the next build does first
    assert sorted(p.name for p in removed) == sorted(left)
    assert [p.name for p in tmp.iterdir()] == [f"nitrodeck-locks-{os.geteuid()}"]


def test_named_temps_of_dead_writers_are_recognised_and_removed(tmp_path: Path) -> None:
    target = tmp_path / "app.eif"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".app.eif.nd-tmp.{dead.stdout.strip()}.abcdef"
    live = tmp_path / f".app.eif.nd-tmp.{os.getpid()}.abcdef"
    unrelated = tmp_path / ".app.eif.nd-tmp.notapid.abcdef"
    for p in (stale, live, unrelated):
        p.write_bytes(b"x")
    assert clean_stale_temps(target) == [stale]
    assert live.exists() and unrelated.exists() and not stale.exists()


def test_two_builds_to_one_output_cannot_both_succeed(tmp_path: Path) -> None:
    out = tmp_path / "app.eif"
    holding = threading.Event()
    release = threading.Event()

    def other_build() -> None:
        with output_lock(out.absolute()):  # what a concurrent build holds for its whole run
            holding.set()
            release.wait(30)

    t = threading.Thread(target=other_build)
    t.start()
    try:
        assert holding.wait(10)
        with pytest.raises(BuildError) as err:
            build_eif(rootfs_req(tmp_path, make_rootfs(tmp_path / "root")), build_time=T1)
        assert err.value.cli_code == "E48" and "another nitrodeck process" in err.value.message
        assert not out.exists()
    finally:
        release.set()
        t.join()
    build_eif(rootfs_req(tmp_path, tmp_path / "root"), build_time=T1)  # free again afterwards
    with pytest.raises(OutputBusy), output_lock(out.absolute()), atomic_output(out, lock=True):
        pass


def test_write_atomic_refuses_devices_and_fifos(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFile):
        write_atomic(fifo, b"secret")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    path = write_atomic(tmp_path / "ok", b"data")
    assert path.read_bytes() == b"data" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "ok"]


def test_seal_out_refuses_a_fifo(tmp_path: Path) -> None:
    from core.ops.provision import _write_private

    fifo = tmp_path / "wallet.kms"
    os.mkfifo(fifo)
    with pytest.raises(NitrodeckError):
        _write_private(fifo, b"ciphertext")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# --- item 4: inputs that are not regular files never block ---------------------------------------


def test_fifo_inputs_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "in"
    os.mkfifo(fifo)  # nobody ever writes: any reader that opens it blocking hangs here
    with pytest.raises(NotRegularFile):
        open_regular(fifo)
    with pytest.raises(NotRegularFile):
        read_limited(fifo, 100)
    with pytest.raises(EifError) as err:
        read_eif(fifo)
    assert err.value.problem == "not a regular file"


def test_nitro_emu_commands_refuse_fifo_inputs(nd_home: Path) -> None:
    configure(nd_home)
    fifo = nd_home / "in.eif"
    os.mkfifo(fifo)
    # describe-eif reports any open failure as E35 (nitro-cli's EifReader opens and parses in one
    # step); pcr's is E19. What matters: each answers at once instead of blocking on the FIFO.
    for argv, code in ((["describe-eif", "--eif-path", str(fifo)], 35), (["pcr", "--input", str(fifo)], 19),
                       (["pcr", "--signing-certificate", str(fifo)], 19)):
        res = emu(*argv, timeout=30)
        assert res.returncode == code, (argv, res.stderr)
    res = run(fifo, "--cpu-count", "2")
    # the enclave process cannot open it (E19), so the CLI got no answer from it: E39, exit 39
    assert res.returncode == 39 and res.stderr.startswith("[ E19 ] File operation failure."), res.stderr
    assert "Failed connections: 1\n[ E39 ]" in res.stderr
