"""Benchmark: building an EIF from a rootfs folder against `tar -c` of the same tree piped through one
SHA-384 pass.

A build has to walk the tree, write the newc cpio ramdisks and the EIF, and measure it; the baseline
walks the tree, writes a tar stream and hashes it once. Target (issue 13): the build within 2x.

    .venv/bin/python benchmarks/build.py [--size-mib 1024] [--runs 2]

Not a test: timings depend on the machine. The tree and the EIFs live in a temp folder.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import emulator.backend  # noqa: E402,F401 - registers the stand-in kernel blobs
from core.eif.build import build_eif  # noqa: E402
from core.models import BuildRequest  # noqa: E402

FILE_MIB = 8  # a few big files and many small ones, like an image's layers
SMALL_FILES = 2000


def make_tree(root: Path, size_mib: int) -> None:
    seed = os.urandom(1024 * 1024)
    for i in range(size_mib // FILE_MIB):
        folder = root / "usr" / "lib" / f"pkg{i % 16}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"blob{i}.so", "wb") as fh:
            for j in range(FILE_MIB):
                fh.write((i * FILE_MIB + j).to_bytes(8, "big") + seed[8:])
    for i in range(SMALL_FILES):
        folder = root / "etc" / f"d{i % 50}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.conf").write_text(f"setting {i}\n" * 20)
    (root / "app").mkdir(exist_ok=True)
    (root / "app" / "run.sh").write_text("#!/bin/sh\nexec sleep 1\n")


def tar_sha384(root: Path) -> str:
    hasher = hashlib.sha384()
    with subprocess.Popen(["tar", "-c", "-C", str(root), "."], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        while block := proc.stdout.read(1024 * 1024):
            hasher.update(block)
    if proc.returncode:
        raise SystemExit("tar failed")
    return hasher.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nd-bench-build-") as tmp:
        work = Path(tmp)
        root = work / "rootfs"
        make_tree(root, args.size_mib)
        tar_sha384(root)  # warm the page cache for both contenders
        tars, builds = [], []
        for n in range(args.runs):
            start = time.perf_counter()
            tar_sha384(root)
            tars.append(time.perf_counter() - start)
            out = work / f"b{n}.eif"
            start = time.perf_counter()
            build_eif(BuildRequest(output_file=str(out), rootfs=str(root), cmd="/app/run.sh"),
                      build_time="2026-01-01T00:00:00Z")
            builds.append(time.perf_counter() - start)
            out.unlink()
        t_tar, t_build = min(tars), min(builds)
        print(f"tree              : {args.size_mib} MiB in {args.size_mib // FILE_MIB + SMALL_FILES} files")
        print(f"tar -c | sha384   : {t_tar:.2f} s wall")
        print(f"build_eif         : {t_build:.2f} s wall (cpio ramdisks, EIF, PCRs)")
        print(f"load average      : {os.getloadavg()[0]:.2f}")
        print(f"ratio build/tar   : {t_build / t_tar:.2f}x (target <= 2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
