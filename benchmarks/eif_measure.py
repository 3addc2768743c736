"""Benchmark: measuring a >= 1 GiB EIF against one SHA-384 pass over the same file.

measure_eif has to hash the customer ramdisk twice (PCR0 and PCR2); it does so in two threads from
one read, so on two cores its wall time should approach one pass: target <= 1.2x `sha384sum`.
describe-eif also checks the EIF's CRC over the whole file; it takes it from the same read, in a
third thread: target <= 1.3x one `hashlib.sha384` pass (1 MiB reads) in this process.

    .venv/bin/python benchmarks/eif_measure.py [--size-mib 1024] [--runs 3]

Not a test: timings depend on the machine. The EIF is written to a temp folder and deleted after.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.eif.format import EifWriter, SectionType, read_eif  # noqa: E402
from core.eif.measure import measure_eif  # noqa: E402
from emulator.eifinfo import describe_eif  # noqa: E402

BLOCK = 4 * 1024 * 1024


def make_ramdisk(path: Path, size_mib: int) -> None:
    """Streamed: one random block, varied per position, so nothing big is ever held in memory."""
    seed = os.urandom(BLOCK)
    with open(path, "wb") as fh:
        for i in range(size_mib * 1024 * 1024 // BLOCK):
            fh.write(i.to_bytes(8, "big") + seed[8:])


def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(wall, CPU) seconds; CPU counts this process and its children, so a busy machine shows up
    as wall time well above CPU / threads."""
    before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before, strict=True))
    return wall, cpu


def hashlib_pass(path: Path) -> str:
    hasher = hashlib.sha384()
    buf = bytearray(1024 * 1024)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            hasher.update(view[:n])
    return hasher.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("sha384sum") is None:
        print("sha384sum not found (coreutils)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="nd-bench-") as tmp:
        work = Path(tmp)
        rd1 = work / "customer.cpio"
        make_ramdisk(rd1, args.size_mib)
        eif = work / "big.eif"
        w = (
            EifWriter()
            .add(SectionType.KERNEL, os.urandom(8 * 1024 * 1024))
            .add(SectionType.CMDLINE, b"console=ttyS0")
        )
        w.add(SectionType.METADATA, b"{}").add(SectionType.RAMDISK, os.urandom(1024 * 1024)).add(
            SectionType.RAMDISK, rd1
        )
        w.write(eif)
        rd1.unlink()  # only the EIF stays: both contenders read the same warm file
        size = eif.stat().st_size
        subprocess.run(["sha384sum", str(eif)], check=True, capture_output=True)  # warm the page cache

        # alternate the contenders so a change in machine load hits both alike; keep the best of each
        sums, measures, passes, describes = [], [], [], []
        for _ in range(args.runs):
            sums.append(
                timed(lambda: subprocess.run(["sha384sum", str(eif)], check=True, capture_output=True))
            )
            measures.append(timed(lambda: measure_eif(eif)))
            passes.append(timed(lambda: hashlib_pass(eif)))
            describes.append(timed(lambda: describe_eif(read_eif(eif))))
        (t_sum, c_sum), (t_measure, c_measure) = min(sums), min(measures)
        (t_pass, _), (t_describe, c_describe) = min(passes), min(describes)
        print(f"EIF size          : {size / 2**30:.2f} GiB, cpus: {os.cpu_count()}")
        print(f"sha384sum         : {t_sum:.2f} s wall, {c_sum:.2f} s CPU ({size / t_sum / 2**20:.0f} MiB/s)")
        print(
            f"measure_eif       : {t_measure:.2f} s wall, {c_measure:.2f} s CPU (PCR0+PCR1+PCR2, 2 threads)"
        )
        print(f"load average      : {os.getloadavg()[0]:.2f} (other work on the machine inflates both)")
        print(f"ratio measure/sum : {t_measure / t_sum:.2f}x (target <= 1.2x)")
        print(f"hashlib.sha384    : {t_pass:.2f} s wall (one pass, 1 MiB reads)")
        print(f"describe-eif      : {t_describe:.2f} s wall, {c_describe:.2f} s CPU (PCRs + CRC + signature)")
        print(f"ratio describe/hashlib pass: {t_describe / t_pass:.2f}x (target <= 1.3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
