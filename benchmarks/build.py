"""Benchmark: building an EIF from a rootfs folder, and from a `docker save` tarball of the same tree,
against `tar -c` of the tree piped through one SHA-384 pass.

A build has to walk the tree, write the newc cpio ramdisks and the EIF, and measure it (PCR0 and PCR2
both hash the customer ramdisk, plus the EIF's CRC and, without --version, the ramdisk's SHA-256); the
baseline walks the tree, writes a tar stream and hashes it once. From a tarball the image is first
unpacked. Target (issue 13): each build within 2x.

    .venv/bin/python benchmarks/build.py [--size-mib 1024] [--runs 2] [--no-image-tar]

Not a test: timings depend on the machine. The tree and the EIFs live in a temp folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
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


def docker_save(root: Path, work: Path) -> Path:
    """A `docker save` (legacy layout) tarball of the tree: one uncompressed layer, a config, a manifest."""
    image = work / "image"
    image.mkdir()
    subprocess.run(["tar", "-c", "-f", str(image / "layer.tar"), "-C", str(root), "."], check=True)
    config = json.dumps({"os": "linux", "config": {"Cmd": ["/app/run.sh"]}}).encode()
    name = hashlib.sha256(config).hexdigest() + ".json"
    (image / name).write_bytes(config)
    (image / "manifest.json").write_text(json.dumps([{"Config": name, "RepoTags": ["bench:1"], "Layers": ["layer.tar"]}]))
    tarball = work / "image.tar"
    subprocess.run(["tar", "-c", "-f", str(tarball), "-C", str(image), "manifest.json", name, "layer.tar"], check=True)
    (image / "layer.tar").unlink()
    return tarball


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--no-image-tar", action="store_true", help="only the rootfs folder build")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nd-bench-build-") as tmp:
        work = Path(tmp)
        root = work / "rootfs"
        make_tree(root, args.size_mib)
        tarball = None if args.no_image_tar else docker_save(root, work)
        tar_sha384(root)  # warm the page cache for both contenders
        requests = {"rootfs folder": BuildRequest(output_file="", rootfs=str(root), cmd="/app/run.sh")}
        if tarball is not None:
            requests["docker save tar"] = BuildRequest(output_file="", image_tar=str(tarball))
        tars: list[float] = []
        builds: dict[str, list[float]] = {name: [] for name in requests}
        for n in range(args.runs):
            start = time.perf_counter()
            tar_sha384(root)
            tars.append(time.perf_counter() - start)
            for name, req in requests.items():
                out = work / f"b{n}.eif"
                start = time.perf_counter()
                build_eif(dataclasses.replace(req, output_file=str(out)), build_time="2026-01-01T00:00:00Z")
                builds[name].append(time.perf_counter() - start)
                out.unlink()
        t_tar = min(tars)
        print(f"tree              : {args.size_mib} MiB in {args.size_mib // FILE_MIB + SMALL_FILES} files")
        print(f"tar -c | sha384   : {t_tar:.2f} s wall")
        for name, times in builds.items():
            print(f"build_eif from the {name}: {min(times):.2f} s wall, ratio {min(times) / t_tar:.2f}x (target <= 2x)")
        print(f"load average      : {os.getloadavg()[0]:.2f} (best of {args.runs} runs each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
